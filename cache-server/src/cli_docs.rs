//! `cache-server completions SHELL` and `cache-server man DIR`: the shell
//! completion script and the man pages (`cache-server.1`,
//! `cache-server-token-create.1`, ...), generated from the command line's
//! definition.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::config::Cli;

/// Prints the completion script for `shell` (a closed pipe just stops it).
pub fn completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cache-server", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete spells a hyphenated program's state one way in its
        // dispatch loop (`cache__server__subcmd__token`) and another in its
        // case arms (`cache__subcmd__server__subcmd__token`), so nothing
        // after a command completed (clap-rs/clap#6421, open): one spelling.
        script = String::from_utf8_lossy(&script)
            .replace("cache__subcmd__server", "cache__server")
            .into_bytes();
    }
    match std::io::stdout().lock().write_all(&script) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error),
        _ => Ok(()),
    }
}

/// Writes the man pages into `dir` (created if needed); their paths.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    command.build();
    let mut pages = vec![(command, "cache-server".to_owned())];
    let mut written = Vec::new();
    while let Some((command, name)) = pages.pop() {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(command.clone().name(name.clone())).render(&mut text)?;
        std::fs::write(&path, text)?;
        written.push(path);
        for sub in command.get_subcommands() {
            if !sub.is_hide_set() && sub.get_name() != "help" {
                pages.push((sub.clone(), format!("{name}-{}", sub.get_name())));
            }
        }
    }
    written.sort();
    Ok(written)
}
