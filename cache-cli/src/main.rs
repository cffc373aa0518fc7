//! The `cachectl` binary: parse, dispatch, exit code. Exit codes: 0 ok,
//! 1 build failed, 2 usage or configuration error, 3 cache or registry
//! unreachable (or refusing our credentials) when it is needed.

use std::io::IsTerminal;
use std::process::ExitCode;

use cache_cli::cli::Cli;
use cache_cli::commands;
use tracing_subscriber::EnvFilter;

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
    let cli = Cli::parse_args();
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
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.exit.code())
        }
    }
}
