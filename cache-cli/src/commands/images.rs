//! Projects of several images (`[images.NAME]`): which image a run is
//! about ([`narrow`]), and `build` / `ensure-base` of several at once
//! ([`run_each`]): one `cachectl` per image, as many at a time as the
//! machine has cores, their progress on stderr prefixed with the image's
//! name, and one report.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::cli::config::ConfigFile;
use crate::cli::{Cli, Command};
use crate::exit::{Exit, Failure};
use crate::report::output::{self, append};

/// What a run works on.
pub enum Narrowed {
    /// One configuration: the file, or one image of it.
    One(Box<ConfigFile>),
    /// Several images of the file, by name.
    Several(Vec<String>),
}

/// Narrows `file` to the images `--only` names (all by default).
pub fn narrow(cli: &Cli, file: ConfigFile) -> Result<Narrowed, Failure> {
    let path = cli.config.display();
    if file.images.is_empty() {
        if !cli.only.is_empty() {
            return Err(Failure::usage(anyhow::anyhow!(
                "--only / CACHECTL_ONLY names images of [images.NAME] sections, and {path} has none"
            )));
        }
        return Ok(Narrowed::One(Box::new(file)));
    }
    // The folder caches and the CAS are the project's, not an image's.
    if matches!(cli.command, Command::Cache { .. } | Command::Cas { .. }) {
        return Ok(Narrowed::One(Box::new(file)));
    }
    let mut names: Vec<String> = Vec::new();
    for name in &cli.only {
        if !file.images.contains_key(name) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--only {name}: {path} has no [images.{name}] (its images are {})",
                file.image_names().join(", ")
            )));
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        names = file.image_names();
    }
    if let [name] = names.as_slice() {
        return file
            .select(&cli.config, name)
            .map(|file| Narrowed::One(Box::new(file)))
            .map_err(Failure::usage);
    }
    match cli.command {
        Command::Build { .. } | Command::EnsureBase { .. } => Ok(Narrowed::Several(names)),
        _ => Err(Failure::usage(anyhow::anyhow!(
            "{path} has the images {}: name one with --only NAME (build and ensure-base take several)",
            names.join(", ")
        ))),
    }
}

/// How one image's run ended.
struct Outcome {
    name: String,
    result: Result<Value, (u8, String)>,
}

/// Runs `build` or `ensure-base` for each of `names`, in parallel.
pub async fn run_each(cli: &Cli, names: &[String]) -> Result<(), Failure> {
    let (subcommand, app_args) = match &cli.command {
        Command::Build { force, wait, app } => {
            if app.image.is_some() || app.context.is_some() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--app-image and --context name one image's; with several images, \
                     choose it with --only NAME"
                )));
            }
            (child_args("build", *force, *wait), app.forwarded_args())
        }
        Command::EnsureBase { force, wait } => {
            (child_args("ensure-base", *force, *wait), Vec::new())
        }
        _ => unreachable_command()?,
    };
    if cli.base.image.is_some() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--image / CACHECTL_BASE_IMAGE names one image's base; with several images, \
             choose it with --only NAME"
        )));
    }
    let exe = std::env::current_exe().map_err(Failure::failed)?;
    let forwarded: Vec<_> = cli
        .forwarded_args()
        .into_iter()
        .filter(|arg| !arg.to_string_lossy().starts_with("--only="))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(cores.min(names.len()).max(1)));
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut runs = tokio::task::JoinSet::new();
    for name in names {
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(&forwarded)
            .arg(format!("--only={name}"))
            .arg("--json")
            .args(&subcommand)
            .args(&app_args)
            .envs(cli.forwarded_env())
            // The outputs are written once, for all images, below.
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("CACHECTL_DOTENV")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let slots = Arc::clone(&slots);
        let name = name.clone();
        runs.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = run_one(command, &format!("[{name:width$}] ")).await;
            Outcome { name, result }
        });
    }
    let mut outcomes: BTreeMap<String, Result<Value, (u8, String)>> = BTreeMap::new();
    while let Some(joined) = runs.join_next().await {
        let outcome = joined.map_err(Failure::failed)?;
        outcomes.insert(outcome.name, outcome.result);
    }
    report(cli, &outcomes).map_err(Failure::failed)?;
    let failed: Vec<(&String, &(u8, String))> = outcomes
        .iter()
        .filter_map(|(name, result)| result.as_ref().err().map(|e| (name, e)))
        .collect();
    match failed.iter().map(|(_, (code, _))| *code).max() {
        None => Ok(()),
        Some(code) => Err(Failure::new(
            Exit::of_code(code.into()),
            anyhow::anyhow!(
                "{} of {} images failed: {}",
                failed.len(),
                outcomes.len(),
                failed
                    .iter()
                    .map(|(name, (code, error))| format!("{name} (exit {code}: {error})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}

/// The command name and its own flags, for a child run.
fn child_args(name: &str, force: bool, wait: std::time::Duration) -> Vec<String> {
    let mut args = vec![
        name.to_owned(),
        format!("--wait={}", humantime::format_duration(wait)),
    ];
    if force {
        args.push("--force".into());
    }
    args
}

/// [`narrow`] returns several images only for build and ensure-base.
fn unreachable_command() -> Result<(Vec<String>, Vec<std::ffi::OsString>), Failure> {
    Err(Failure::usage(anyhow::anyhow!(
        "only build and ensure-base work on several images at once"
    )))
}

/// Runs one image's `cachectl`, relaying its stderr line by line with
/// `prefix`; its JSON report, or its exit code and last error line.
async fn run_one(
    mut command: tokio::process::Command,
    prefix: &str,
) -> Result<Value, (u8, String)> {
    let mut child = command
        .spawn()
        .map_err(|e| (1, format!("cannot start cachectl: {e}")))?;
    let stderr = child.stderr.take();
    let mut stdout = child.stdout.take();
    let relay = async {
        let mut last_error = String::new();
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(error) = line.strip_prefix("error: ") {
                    last_error = error.to_owned();
                }
                eprintln!("{prefix}{line}");
            }
        }
        last_error
    };
    let read = async {
        let mut text = String::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_string(&mut text).await;
        }
        text
    };
    let (last_error, text) = tokio::join!(relay, read);
    let status = child
        .wait()
        .await
        .map_err(|e| (1, format!("cachectl did not finish: {e}")))?;
    if !status.success() {
        let code = status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1);
        return Err((code, last_error));
    }
    serde_json::from_str(text.trim()).map_err(|e| (1, format!("cachectl printed no report ({e})")))
}

/// The reference an image's report names: the app image for `build`, the
/// base for `ensure-base`.
fn reference(report: &Value) -> &str {
    report["app"]["reference"]
        .as_str()
        .or_else(|| report["reference"].as_str())
        .unwrap_or_default()
}

/// The base half of an image's report.
fn base_of(report: &Value) -> &Value {
    if report["base"].is_object() {
        &report["base"]
    } else {
        report
    }
}

/// Prints the one report (JSON, or a `NAME REFERENCE` line per image) and
/// writes the CI outputs: `NAME-image`, `NAME-base-image`,
/// `NAME-cache-hit` per image, `images` (JSON of name to reference) and
/// `cache-hit` (every base a hit).
fn report(
    cli: &Cli,
    outcomes: &BTreeMap<String, Result<Value, (u8, String)>>,
) -> std::io::Result<()> {
    let mut images = serde_json::Map::new();
    let mut failed = serde_json::Map::new();
    for (name, result) in outcomes {
        match result {
            Ok(report) => {
                images.insert(name.clone(), report.clone());
            }
            Err((code, error)) => {
                failed.insert(name.clone(), json!({ "code": code, "error": error }));
            }
        }
    }
    if cli.json {
        println!("{}", json!({ "images": images, "failed": failed }));
    } else {
        for (name, report) in &images {
            println!("{name} {}", reference(report));
        }
    }
    let building = matches!(cli.command, Command::Build { .. });
    let mut lines = String::new();
    let mut summary = String::from("| image | base | reference |\n| --- | --- | --- |\n");
    let mut references = serde_json::Map::new();
    for (name, report) in &images {
        let base = base_of(report);
        let hit = base["hit"].as_bool().unwrap_or(false);
        if building {
            lines.push_str(&format!("{name}-image={}\n", reference(report)));
        }
        lines.push_str(&format!(
            "{name}-base-image={}\n{name}-cache-hit={hit}\n",
            base["reference"].as_str().unwrap_or_default()
        ));
        references.insert(name.clone(), Value::from(reference(report)));
        let outcome = if hit {
            format!(
                "hit in {:.0} ms",
                base["seconds"].as_f64().unwrap_or(0.0) * 1000.0
            )
        } else {
            format!("built in {:.1} s", base["seconds"].as_f64().unwrap_or(0.0))
        };
        summary.push_str(&format!(
            "| {name} | {outcome} | `{}` |\n",
            reference(report)
        ));
        eprintln!("{name}: {} (base {outcome})", reference(report));
    }
    for (name, failure) in &failed {
        summary.push_str(&format!(
            "| {name} | failed (exit {}) | |\n",
            failure["code"]
        ));
    }
    let all_hit = failed.is_empty()
        && images
            .values()
            .all(|report| base_of(report)["hit"].as_bool().unwrap_or(false));
    lines.push_str(&format!(
        "images={}\ncache-hit={all_hit}\n",
        Value::Object(references)
    ));
    output::outputs(&lines)?;
    append(
        "GITHUB_STEP_SUMMARY",
        &format!(
            "cachectl {}:\n\n{summary}",
            if building { "build" } else { "ensure-base" }
        ),
    )
}
