//! `cachectl completions SHELL`: the shell completion script, generated
//! from the command line's definition (so it never lags behind a flag).

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Failure;

/// Prints the completion script for `shell` on stdout.
pub fn run(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Into memory first: the generator panics on a write error (a closed
    // pipe), where a command should just stop.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "cachectl", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::failed(error)),
        _ => Ok(()),
    }
}
