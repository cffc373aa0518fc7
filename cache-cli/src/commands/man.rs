//! `cachectl man DIR`: man pages (section 1) of cachectl and each of its
//! commands (`cachectl-build.1`, `cachectl-cache-save.1`, ...), generated
//! from the command line's definition.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Failure;

/// Writes the pages into `dir` (created if needed) and prints their paths.
pub fn run(dir: &Path) -> Result<(), Failure> {
    let written = write_pages(dir).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "writing man pages into {}: {e}",
            dir.display()
        ))
    })?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// The pages of cachectl and its commands, into `dir`.
fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    command.build();
    let mut written = Vec::new();
    page(&command, "cachectl", dir, &mut written)?;
    Ok(written)
}

/// Writes `name.1` for `command`, then a page for each of its commands.
fn page(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut text = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.to_owned())).render(&mut text)?;
    std::fs::write(&path, text)?;
    written.push(path);
    for sub in command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
    {
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
