//! The shell completions and man pages both programs generate from their
//! command lines: bash loads the completion script and completes a
//! command's flags with it; zsh and fish scripts name every command; `man`
//! renders a page for every command, with its flags.

use std::path::Path;
use std::process::Command;

use cachectl_e2e::bins::workspace_binary;

/// The program's commands, from its `--help` (without `help`).
fn commands(program: &Path) -> Vec<String> {
    let output = Command::new(program).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn stdout(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn bash_completes_the_commands_and_flags_of_both_programs() {
    for (name, command, flag) in [
        ("cachectl", "build", "--app-image"),
        ("cache-server", "serve", "--storage"),
    ] {
        let program = workspace_binary(name);
        let folder = tempfile::tempdir().unwrap();
        let script = folder.path().join("completion.bash");
        std::fs::write(&script, stdout(&program, &["completions", "bash"])).unwrap();
        // What bash offers after `NAME ` and after `NAME COMMAND --`.
        let offered = |words: &str| -> String {
            let shell = format!(
                "source {script}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
                 $(complete -p {name} | sed 's/.*-F \\([^ ]*\\).*/\\1/') {name} \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script = script.display()
            );
            let output = Command::new("bash").arg("-c").arg(&shell).output().unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let first = offered(&format!("{name} ''"));
        for command in commands(&program) {
            assert!(
                first.lines().any(|w| w == command),
                "{name}: no {command} in {first}"
            );
        }
        let flags = offered(&format!("{name} {command} --"));
        assert!(
            flags.lines().any(|w| w == flag),
            "{name} {command}: no {flag} in {flags}"
        );
        for shell in ["zsh", "fish"] {
            let text = stdout(&program, &["completions", shell]);
            for command in commands(&program) {
                assert!(text.contains(&command), "{name} {shell}: no {command}");
            }
        }
    }
}

#[test]
fn man_renders_a_page_for_every_command_of_both_programs() {
    for (name, command, flag) in [
        ("cachectl", "build", "--app-image"),
        ("cache-server", "token-create", "--secret-file"),
    ] {
        let program = workspace_binary(name);
        let folder = tempfile::tempdir().unwrap();
        let listed = stdout(&program, &["man", folder.path().to_str().unwrap()]);
        let mut pages = vec![name.to_owned()];
        pages.extend(
            commands(&program)
                .into_iter()
                .map(|c| format!("{name}-{c}")),
        );
        for page in &pages {
            let path = folder.path().join(format!("{page}.1"));
            assert!(
                listed.contains(&path.display().to_string()),
                "{page} not listed"
            );
            let rendered = Command::new("man")
                .arg("-l")
                .arg(&path)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&rendered.stdout);
            assert!(
                rendered.status.success() && text.contains("NAME") && text.contains(page.as_str()),
                "{page}: {text}"
            );
        }
        let page = folder.path().join(format!("{name}-{command}.1"));
        let rendered = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains(flag), "{name}-{command}: no {flag} in {text}");
    }
}
