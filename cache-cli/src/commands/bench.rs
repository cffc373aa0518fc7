//! `cachectl bench`: the deploy step of the user's own project, measured in
//! three scenarios, several runs each, as CI runs it (a new `cachectl build`
//! process per run):
//!
//! - *cold*: the base is rebuilt (`--force`) and a changed app layered on it;
//! - *app change*: the base is a hit, the app changed;
//! - *no change*: the base is a hit, the app is the one just pushed.
//!
//! The app is a copy of the context with one marker file that each cold and
//! app-change run rewrites, so the user's files are never touched; images go
//! to the app repository under the tag `cachectl-bench`, removed afterwards
//! unless `--keep`. Each run gets this run's settings: the global and base
//! flags as arguments ([`Cli::forwarded_args`]), secrets as variables.

use std::path::{Path, PathBuf};

use super::context::registry_for;
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::exit::{Exit, Failure};
use crate::image::Location;
use crate::report::bench::{BenchReport, RunTimes};

/// The tag bench images are pushed under.
pub const BENCH_TAG: &str = "cachectl-bench";

/// The scenarios, in order.
pub const SCENARIOS: [&str; 3] = ["cold", "app-change", "no-change"];

/// The marker file written into the copied context.
const MARKER: &str = ".cachectl-bench";

/// Copies `from` into `to`: files, folders and symlinks (as links).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Marks the copied context so that its app layer differs from every other run's.
pub fn mark(context: &Path, label: &str) -> std::io::Result<()> {
    std::fs::write(context.join(MARKER), format!("cachectl bench {label}\n"))
}

/// The bench image of an app image: same repository (or layout), tag
/// [`BENCH_TAG`].
pub fn bench_image(image: &str) -> String {
    let last_slash = image.rfind('/').map_or(0, |at| at + 1);
    let name = match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    if let Some(layout) = name.strip_prefix("oci:") {
        format!("oci:{layout}:{BENCH_TAG}")
    } else {
        format!("{name}:{BENCH_TAG}")
    }
}

/// A folder for the copied context.
pub fn scratch() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("cachectl-bench").tempdir()
}

/// Where the copied context lives inside the scratch folder.
pub fn context_in(scratch: &Path) -> PathBuf {
    scratch.join("context")
}

/// How many runs, and what to do with the result.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Runs per scenario.
    pub runs: usize,
    /// Keep the images pushed under the bench tag.
    pub keep: bool,
    /// Also draw the phases into this SVG file.
    pub plot: Option<&'a Path>,
}

/// One `cachectl build --json` run of the bench.
fn bench_run(
    cli: &Cli,
    app: &AppFlags,
    (context, image): (&Path, &str),
    force: bool,
) -> Result<RunTimes, Failure> {
    let exe = std::env::current_exe().map_err(Failure::failed)?;
    let mut command = std::process::Command::new(exe);
    command
        .args(cli.forwarded_args())
        .args(["build", "--json", "--app-image", image, "--context"])
        .arg(context)
        .args(app.forwarded_args())
        .envs(cli.forwarded_env())
        .env("CACHECTL_EVENTS", "off")
        // Nor do they add deploy tags.
        .env("CACHECTL_DEPLOY_TAGS", "false");
    if force {
        command.arg("--force");
    }
    let started = std::time::Instant::now();
    let output = command.output().map_err(Failure::failed)?;
    let wall = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(Failure::new(
            Exit::of_code(output.status.code().unwrap_or(1)),
            anyhow::anyhow!(
                "a bench run failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Failure::failed(anyhow::anyhow!("a bench run printed no JSON: {e}")))?;
    let mut times = RunTimes::from_build_json(&json)
        .ok_or_else(|| Failure::failed(anyhow::anyhow!("a bench run's JSON lacks its times")))?;
    // The whole step as CI sees it, process start included.
    times.phases.insert("total".to_owned(), wall);
    Ok(times)
}

/// Runs the bench and prints its table (or JSON).
pub async fn run(
    cli: &Cli,
    file: &ConfigFile,
    options: Options<'_>,
    app: &AppFlags,
) -> Result<(), Failure> {
    let settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    let image = bench_image(&settings.image.tagged());
    let scratch = scratch().map_err(Failure::failed)?;
    let context = context_in(scratch.path());
    copy_tree(&settings.context, &context).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "copying {}: {e}",
            settings.context.display()
        ))
    })?;
    // Unique to this bench, so that no run matches an earlier bench's push.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let runs = options.runs;
    let mut measured = Vec::new();
    for scenario in SCENARIOS {
        let mut times = Vec::new();
        for run in 1..=runs {
            eprintln!("bench: {scenario} {run}/{runs}");
            // No change: the app as the last app-change run pushed it.
            if scenario != "no-change" {
                mark(&context, &format!("{nonce} {scenario} {run}")).map_err(Failure::failed)?;
            }
            times.push(bench_run(cli, app, (&context, &image), scenario == "cold")?);
        }
        measured.push((scenario.to_owned(), times));
    }
    let report = BenchReport::new(image.clone(), runs, measured);
    if let Some(path) = options.plot {
        std::fs::write(path, report.svg())
            .map_err(|e| Failure::failed(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    if !options.keep {
        remove_bench_image(cli, &image).await;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(Failure::failed)?
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Removes what the bench pushed under its tag: the layout's tag, or the
/// registry manifest (where the registry allows deletes); says so otherwise.
async fn remove_bench_image(cli: &Cli, image: &str) {
    let location = match Location::parse(image, Path::new("")) {
        Ok(location) => location,
        Err(error) => {
            eprintln!("warning: not cleaning up {image}: {error}");
            return;
        }
    };
    let removed = match &location {
        Location::Layout { layout, .. } => layout.remove_tag(BENCH_TAG).map_err(|e| e.to_string()),
        Location::Registry(reference) => {
            let registry = registry_for(cli, location.registry_host().map(str::to_owned));
            match location.resolve(&registry).await {
                Ok(Some(digest)) => registry
                    .delete_manifest(reference, &digest)
                    .await
                    .map(|()| true)
                    .map_err(|e| e.to_string()),
                Ok(None) => Ok(false),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    if let Err(error) = removed {
        eprintln!("warning: could not remove {image} ({error}); delete it by hand or pass --keep");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_images_keep_the_repository_and_take_the_bench_tag() {
        assert_eq!(
            bench_image("registry:5000/acme/web:main"),
            "registry:5000/acme/web:cachectl-bench"
        );
        assert_eq!(
            bench_image("registry:5000/acme/web"),
            "registry:5000/acme/web:cachectl-bench"
        );
        assert_eq!(
            bench_image("oci:./build/oci:web"),
            "oci:./build/oci:cachectl-bench"
        );
    }
}
