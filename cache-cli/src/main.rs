//! The `cachectl` binary. Exit codes: 0 ok, 1 build failed, 2 usage or
//! configuration error, 3 cache or registry unreachable (or refusing our
//! credentials) when it is needed.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use cache_cli::app::{BASE_KEY_LABEL, LayerError};
use cache_cli::build::BuildError;
use cache_cli::cli::{CacheCommand, Cli, Command};
use cache_cli::config::ConfigFile;
use cache_cli::ensure::{EnsureError, EnsureOptions, EnsureReport, ensure_base};
use cache_cli::folder::remote::Remote;
use cache_cli::folder::restore::ContentStore;
use cache_cli::folder::run::{FolderError, FolderSettings, restore_folder, save};
use cache_cli::image::{ImageError, ImageTarget, Location, Registry, RegistryError};
use cache_cli::key::Recipe;
use cache_cli::key::diff;
use cache_cli::record::{RecordStore, latest_key};
use cache_cli::{bench, events, output};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A failure with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

fn registry_code(error: &RegistryError) -> u8 {
    match error {
        RegistryError::Unreachable { .. } | RegistryError::Auth { .. } => 3,
        RegistryError::Other { .. } => 1,
    }
}

impl From<EnsureError> for Failure {
    fn from(error: EnsureError) -> Self {
        let code = match &error {
            EnsureError::Key(_) | EnsureError::Usage(_) => 2,
            EnsureError::CacheRequired(_) => 3,
            EnsureError::Build(BuildError::Registry(e)) => registry_code(e),
            EnsureError::Publish(ImageError::Registry(e)) => registry_code(e),
            EnsureError::Build(_) | EnsureError::Publish(_) => 1,
        };
        Self::new(code, error)
    }
}

/// CA bundles, in the order distributions put them.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Points TLS at the system's CA bundle file unless the user chose
/// `SSL_CERT_FILE` or `SSL_CERT_DIR`. Without it the TLS stack reads every
/// file of `/etc/ssl/certs` (about 300 opens, ~40 ms) on each start, which
/// is most of a warm `ensure-base`.
fn prefer_ca_bundle_file() {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return;
    }
    if let Some(bundle) = CA_BUNDLES
        .iter()
        .find(|path| std::path::Path::new(path).is_file())
    {
        // SAFETY: called first thing in main, before the runtime or any
        // other thread exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("SSL_CERT_FILE", bundle) };
    }
}

fn main() -> ExitCode {
    prefer_ca_bundle_file();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

impl From<LayerError> for Failure {
    fn from(error: LayerError) -> Self {
        let code = match &error {
            LayerError::Usage(_) => 2,
            LayerError::Image(ImageError::Registry(e)) => registry_code(e),
            LayerError::Image(ImageError::Layout(_)) => 1,
            LayerError::Pack { .. } => 1,
        };
        Self::new(code, error)
    }
}

/// The registry host of a reference or repository (`docker.io` when none).
fn host_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

/// The registry session for `layer` between two locations.
fn registry_between(cli: &Cli, base: &Location, target: &Location) -> Registry {
    let hosts: Vec<&str> = [base, target]
        .into_iter()
        .filter_map(Location::registry_host)
        .collect();
    Registry::new(cli.registry_settings(), &hosts)
}

fn records_for(cli: &Cli, file: &ConfigFile) -> Result<RecordStore, Failure> {
    Ok(match cli.cache_url(file) {
        Some(url) => {
            let roots = cli.extra_roots().map_err(|e| Failure::new(2, e))?;
            RecordStore::server(&url, cli.cache_token.as_deref(), roots)
        }
        None => RecordStore::local(cli.records_dir()),
    })
}

/// The registry hosts `ensure-base` talks to: the base image's and the
/// native builder's starting image's.
fn base_hosts(settings: &cache_cli::ensure::BaseSettings) -> Vec<String> {
    let mut hosts = Vec::new();
    if let ImageTarget::Registry(repository) = &settings.image {
        hosts.push(host_of(repository.as_str()));
    }
    if let Recipe::Native {
        from: Some(from), ..
    } = &settings.recipe
    {
        hosts.push(host_of(from.as_str()));
    }
    hosts
}

async fn ensure(
    cli: &Cli,
    file: &ConfigFile,
    records: &RecordStore,
    (force, wait): (bool, std::time::Duration),
    extra_hosts: &[&str],
) -> Result<(EnsureReport, Registry), Failure> {
    let settings = cli.base_settings(file).map_err(|e| Failure::new(2, e))?;
    let hosts = base_hosts(&settings);
    let mut host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    host_refs.extend_from_slice(extra_hosts);
    let registry = Registry::new(cli.registry_settings(), &host_refs);
    let options = EnsureOptions {
        force,
        require_cache: cli.require_cache,
        wait,
    };
    let report = ensure_base(&settings, records, &registry, options).await?;
    Ok((report, registry))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let file = cli.load_file().map_err(|e| Failure::new(2, e))?;
    match &cli.command {
        Command::Layer { base, app } => {
            let settings = cli
                .app_settings(&file, app)
                .map_err(|e| Failure::new(2, e))?;
            // Relative layout folders stay relative to the working directory.
            let base = Location::parse(base, Path::new("")).map_err(|e| Failure::new(2, e))?;
            let registry = registry_between(&cli, &base, &settings.image);
            let records = records_for(&cli, &file)?;
            let report = cache_cli::app::layer(&registry, Some(&records), &base, &settings).await?;
            // The result first: the history is best effort, after it.
            output::report_layer(&report, cli.json).map_err(|e| Failure::new(1, e))?;
            records.report_event(&events::from_layer(&report)).await;
            Ok(())
        }
        Command::Build { force, wait, app } => {
            let mut settings = cli
                .app_settings(&file, app)
                .map_err(|e| Failure::new(2, e))?;
            // One registry session (and its tokens) for both halves.
            let app_host: Vec<&str> = settings.image.registry_host().into_iter().collect();
            let records = records_for(&cli, &file)?;
            let (base, registry) =
                ensure(&cli, &file, &records, (*force, *wait), &app_host).await?;
            settings
                .labels
                .insert(BASE_KEY_LABEL.to_owned(), base.key.clone());
            let base_location =
                Location::parse(&base.reference, Path::new("")).map_err(|e| Failure::new(1, e))?;
            let report =
                cache_cli::app::layer(&registry, Some(&records), &base_location, &settings).await?;
            output::report_build(&base, &report, cli.json).map_err(|e| Failure::new(1, e))?;
            records
                .report_event(&events::from_build(&base, &report))
                .await;
            Ok(())
        }
        Command::EnsureBase { force, wait } => {
            let records = records_for(&cli, &file)?;
            let (report, _) = ensure(&cli, &file, &records, (*force, *wait), &[]).await?;
            output::report_ensure(&report, cli.json).map_err(|e| Failure::new(1, e))?;
            records.report_event(&events::from_ensure(&report)).await;
            Ok(())
        }
        Command::Hash { explain } => hash(&cli, &file, *explain).await,
        Command::Cache { action } => folder_cache(&cli, &file, action).await,
        Command::Bench {
            runs,
            keep,
            plot,
            app,
        } => run_bench(&cli, &file, *runs as usize, *keep, plot.as_deref(), app).await,
    }
}

/// `cachectl cache save|restore`. The cache is an accelerator: an
/// unreachable server is a warning (a skipped save, a miss) unless
/// `--require-cache`.
async fn folder_cache(cli: &Cli, file: &ConfigFile, action: &CacheCommand) -> Result<(), Failure> {
    let flags = match action {
        CacheCommand::Save(flags) | CacheCommand::Restore(flags) => flags,
    };
    let records = records_for(cli, file)?;
    let Some(remote) = Remote::of(&records) else {
        return Err(Failure::new(
            2,
            anyhow::anyhow!(
                "cachectl cache needs a cache server: --cache URL or `cache` in cachectl.toml"
            ),
        ));
    };
    let platform = match &cli.base.platform {
        Some(text) => cache_cli::image::oci::Platform::parse(text)
            .map_err(|m| Failure::new(2, anyhow::anyhow!("--platform: {m}")))?
            .to_string(),
        None => cache_cli::image::oci::Platform::host().to_string(),
    };
    let settings = FolderSettings {
        name: flags.name.clone(),
        key_files: flags.key_files.clone(),
        path: flags.path.clone(),
        excludes: flags.excludes.clone(),
        key_extra: flags.key_extra.clone(),
        platform,
    };
    let failure = |error: FolderError| match error {
        FolderError::Usage(_) => Failure::new(2, error),
        FolderError::Cache(_) if cli.require_cache => Failure::new(3, error),
        FolderError::Cache(_) | FolderError::Read { .. } | FolderError::Restore(_) => {
            Failure::new(1, error)
        }
    };
    match action {
        CacheCommand::Save(_) => match save(&settings, &records, &remote).await {
            Ok(report) => output::report_folder_save(&report, cli.json),
            Err(FolderError::Cache(error)) if !cli.require_cache => {
                eprintln!("warning: the folder was not saved: {error}");
                Ok(())
            }
            Err(error) => return Err(failure(error)),
        },
        CacheCommand::Restore(_) => {
            let store = ContentStore::new(cli.cachectl_dir().join("content"));
            match restore_folder(&settings, &records, &remote, &store).await {
                Ok(report) => output::report_folder_restore(&report, cli.json),
                Err(FolderError::Cache(error)) if !cli.require_cache => {
                    eprintln!("warning: nothing restored: {error}");
                    let miss = cache_cli::folder::run::miss_report(&settings);
                    output::report_folder_restore(&miss, cli.json)
                }
                Err(error) => return Err(failure(error)),
            }
        }
    }
    .map_err(|e| Failure::new(1, e))
}

/// The arguments this process got, less `bench` and what only `bench`
/// takes (and what each run sets itself), to pass on to every run.
fn forwarded_args() -> Vec<std::ffi::OsString> {
    let own_with_value = ["--runs", "--plot", "--context", "--app-image"];
    let own_flags = ["--keep", "--json", "bench"];
    let mut forwarded = Vec::new();
    let mut args = std::env::args_os().skip(1);
    let mut dropped_subcommand = false;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        if own_with_value.contains(&name) {
            if !text.contains('=') {
                args.next();
            }
            continue;
        }
        if own_flags.contains(&name) && (name != "bench" || !dropped_subcommand) {
            dropped_subcommand |= name == "bench";
            continue;
        }
        forwarded.push(arg);
    }
    forwarded
}

/// One `cachectl build --json` run of the bench.
fn bench_run(
    forwarded: &[std::ffi::OsString],
    (context, image): (&std::path::Path, &str),
    force: bool,
) -> Result<bench::RunTimes, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(forwarded)
        .args(["build", "--json", "--app-image", image, "--context"])
        .arg(context)
        .env("CACHECTL_EVENTS", "off");
    if force {
        command.arg("--force");
    }
    let started = std::time::Instant::now();
    let output = command.output().map_err(|e| Failure::new(1, e))?;
    let wall = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(Failure::new(
            output.status.code().unwrap_or(1).clamp(1, 3) as u8,
            anyhow::anyhow!(
                "a bench run failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Failure::new(1, anyhow::anyhow!("a bench run printed no JSON: {e}")))?;
    let mut times = bench::RunTimes::from_build_json(&json)
        .ok_or_else(|| Failure::new(1, anyhow::anyhow!("a bench run's JSON lacks its times")))?;
    // The whole step as CI sees it, process start included.
    times.phases.insert("total".to_owned(), wall);
    Ok(times)
}

async fn run_bench(
    cli: &Cli,
    file: &ConfigFile,
    runs: usize,
    keep: bool,
    plot: Option<&Path>,
    app: &cache_cli::cli::AppFlags,
) -> Result<(), Failure> {
    let settings = cli
        .app_settings(file, app)
        .map_err(|e| Failure::new(2, e))?;
    let image = bench::bench_image(&settings.image.tagged());
    let scratch = bench::scratch().map_err(|e| Failure::new(1, e))?;
    let context = bench::context_in(scratch.path());
    bench::copy_tree(&settings.context, &context).map_err(|e| {
        Failure::new(
            1,
            anyhow::anyhow!("copying {}: {e}", settings.context.display()),
        )
    })?;
    let forwarded = forwarded_args();
    // Unique to this bench, so that no run matches an earlier bench's push.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut measured = Vec::new();
    for scenario in bench::SCENARIOS {
        let mut times = Vec::new();
        for run in 1..=runs {
            eprintln!("bench: {scenario} {run}/{runs}");
            let force = scenario == "cold";
            if scenario != "no-change" {
                bench::mark(&context, &format!("{nonce} {scenario} {run}"))
                    .map_err(|e| Failure::new(1, e))?;
            } else if run == 1 {
                // The app as the last app-change run pushed it.
            }
            times.push(bench_run(&forwarded, (&context, &image), force)?);
        }
        measured.push((scenario.to_owned(), times));
    }
    let report = bench::BenchReport::new(image.clone(), runs, measured);
    if let Some(path) = plot {
        std::fs::write(path, report.svg())
            .map_err(|e| Failure::new(1, anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    if !keep {
        remove_bench_image(cli, &image).await;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Failure::new(1, e))?
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
    let registry = Registry::new(
        cli.registry_settings(),
        &location.registry_host().into_iter().collect::<Vec<_>>(),
    );
    let removed = match &location {
        Location::Layout { layout, .. } => layout
            .remove_tag(bench::BENCH_TAG)
            .map_err(|e| e.to_string()),
        Location::Registry(reference) => match location.resolve(&registry).await {
            Ok(Some(digest)) => registry
                .delete_manifest(reference, &digest)
                .await
                .map(|()| true)
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(false),
            Err(error) => Err(error.to_string()),
        },
    };
    if let Err(error) = removed {
        eprintln!("warning: could not remove {image} ({error}); delete it by hand or pass --keep");
    }
}

async fn hash(cli: &Cli, file: &ConfigFile, explain: bool) -> Result<(), Failure> {
    let settings = cli.base_settings(file).map_err(|e| Failure::new(2, e))?;
    let records = records_for(cli, file)?;
    let base = settings.key().map_err(|e| Failure::new(2, e))?;
    let changes = if explain {
        let latest = latest_key(&settings.image.describe());
        match records.get::<cache_cli::record::BaseRecord>(&latest).await {
            Ok(Some(previous)) => Some(diff(&previous.inputs, &base.inputs)),
            Ok(None) => None,
            Err(error) if cli.require_cache => return Err(Failure::new(3, error)),
            Err(error) => {
                eprintln!("warning: {error}");
                None
            }
        }
    } else {
        None
    };
    if cli.json {
        let value = serde_json::json!({
            "key": base.key,
            "inputs": base.inputs,
            "changed": changes,
        });
        println!("{value}");
        return Ok(());
    }
    println!("{}", base.key);
    for input in &base.inputs {
        eprintln!("  {}  {input}", &input.hash[..16]);
    }
    match changes {
        Some(changes) if changes.is_empty() => eprintln!("unchanged since the last recorded base"),
        Some(changes) => {
            eprintln!("changed since the last recorded base:");
            for change in changes {
                eprintln!("  {change}");
            }
        }
        None if explain => eprintln!("no base recorded yet for this image"),
        None => {}
    }
    Ok(())
}
