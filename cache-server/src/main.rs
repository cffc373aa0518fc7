//! The `cache-server` binary: parse, log, dispatch, exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use cache_server::config::{Cli, Command};
use cache_server::{admin, cli_docs, startup};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc: a small request allocates and
/// frees a few dozen blocks (headers, futures, buffers), and glibc's
/// bookkeeping of them was about a sixth of its user-space CPU
/// (`docs/benchmarks.md`, "What a 4 KiB GET costs"). mimalloc was as fast
/// but kept what uploads had freed on other threads: the `load` suite's
/// server peaked at 2.8 GiB against its 800 MiB bound (jemalloc: 413 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Reindex) => admin::reindex_command(&cli).await,
        Some(Command::Token { action }) => admin::token_command(&cli, action).await,
        Some(Command::Completions { shell }) => Ok(cli_docs::completions(*shell)?),
        Some(Command::Man { dir }) => {
            for path in cli_docs::man_pages(dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Some(Command::Serve) | None => startup::serve(&cli).await,
    }
}
