//! The `cachectl` binary. Exit codes: 0 ok, 1 build failed, 2 usage or
//! configuration error, 3 cache or registry unreachable (or refusing our
//! credentials) when it is needed.

use std::io::IsTerminal;
use std::process::ExitCode;

use cache_cli::build::BuildError;
use cache_cli::cli::{Cli, Command};
use cache_cli::ensure::{EnsureError, EnsureOptions, ensure_base};
use cache_cli::image::publish::PublishError;
use cache_cli::image::{ImageTarget, Registry, RegistryError};
use cache_cli::key::diff;
use cache_cli::output;
use cache_cli::record::{RecordStore, latest_key};
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
            EnsureError::Publish(PublishError::Registry(e)) => registry_code(e),
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let file = cli.load_file().map_err(|e| Failure::new(2, e))?;
    let settings = cli.base_settings(&file).map_err(|e| Failure::new(2, e))?;
    let records = match cli.cache_url(&file) {
        Some(url) => RecordStore::server(&url),
        None => RecordStore::local(cli.records_dir()),
    };
    match cli.command {
        Command::Hash { explain } => {
            let base = settings.key().map_err(|e| Failure::new(2, e))?;
            let changes = if explain {
                let latest = latest_key(&settings.image.describe());
                match records.get(&latest).await {
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
            } else {
                println!("{}", base.key);
                for input in &base.inputs {
                    eprintln!("  {}  {input}", &input.hash[..16]);
                }
                match changes {
                    Some(changes) if changes.is_empty() => {
                        eprintln!("unchanged since the last recorded base")
                    }
                    Some(changes) => {
                        eprintln!("changed since the last recorded base:");
                        for change in changes {
                            eprintln!("  {change}");
                        }
                    }
                    None if explain => eprintln!("no base recorded yet for this image"),
                    None => {}
                }
            }
            Ok(())
        }
        Command::EnsureBase { force, wait } => {
            let mut hosts = Vec::new();
            if let ImageTarget::Registry(repository) = &settings.image {
                hosts.push(repository.split('/').next().unwrap_or_default().to_owned());
            }
            if let cache_cli::key::Recipe::Native {
                from: Some(from), ..
            } = &settings.recipe
            {
                hosts.push(from.split('/').next().unwrap_or_default().to_owned());
            }
            let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let registry = Registry::new(cli.registry_settings(), &host_refs);
            let options = EnsureOptions {
                force,
                require_cache: cli.require_cache,
                wait,
            };
            let report = ensure_base(&settings, &records, &registry, options).await?;
            output::report_ensure(&report, cli.json).map_err(|e| Failure::new(1, e))?;
            Ok(())
        }
    }
}
