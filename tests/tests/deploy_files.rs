//! The deployment files in `deploy/` are what they claim: the systemd unit
//! passes `systemd-analyze verify` without a word, every setting its
//! environment file names is one `cache-server` reads, and those settings,
//! with the token made the way the unit's comment says, start a server that
//! requires tokens and serves with one.

use std::path::{Path, PathBuf};
use std::process::Command;

use cachectl_e2e::bins::workspace_binary;
use cachectl_e2e::process::free_port;

fn deploy(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(relative)
}

/// The `NAME=value` lines of an environment file, commented-out examples
/// included when `with_examples`.
fn settings(text: &str, with_examples: bool) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| match line.strip_prefix("# ") {
            Some(example) if with_examples => Some(example),
            Some(_) => None,
            None if line.starts_with('#') => None,
            None => Some(line),
        })
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| {
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
        })
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_settings_start_a_server_that_requires_tokens() {
    let server = workspace_binary("cache-server");
    let unit = std::fs::read_to_string(deploy("systemd/cache-server.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/cache-server\n"),
        "{unit}"
    );
    // verify needs the program to exist: point it at the one just built.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("cache-server.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/cache-server", &server.display().to_string()),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    // Every CACHE_SERVER_* name the file sets or suggests is a real one.
    let help = Command::new(&server).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let env_text = std::fs::read_to_string(deploy("systemd/cache-server.env")).unwrap();
    for (name, _) in settings(&env_text, true) {
        if name.starts_with("CACHE_SERVER_") {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "cache-server reads no {name}"
            );
        }
    }

    // The file's settings, on a loopback port and in a temporary folder.
    let state = scratch.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = settings(&env_text, false)
        .into_iter()
        .map(|(name, value)| {
            let value = match name.as_str() {
                "CACHE_SERVER_LISTEN" => format!("127.0.0.1:{port}"),
                _ => value.replace("/var/lib/cache-server", &state.display().to_string()),
            };
            (name, value)
        })
        .collect();
    assert!(
        env.iter()
            .any(|(n, v)| n == "CACHE_SERVER_AUTH" && v == "required")
    );
    let token = Command::new(&server)
        .args(["token", "create", "--name", "ci", "--scope", "write"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let mut child = Command::new(&server)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let curl = |args: &[&str]| -> String {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut ready = String::new();
    for _ in 0..100 {
        ready = curl(&[&format!("{base}/readyz")]);
        if ready == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let digest = blake3::hash(b"deployed").to_hex().to_string();
    let blob = format!("{base}/v1/cas/{digest}");
    let anonymous = curl(&["-X", "PUT", "--data-binary", "deployed", &blob]);
    let bearer = format!("Authorization: Bearer {token}");
    let stored = curl(&[
        "-X",
        "PUT",
        "-H",
        &bearer,
        "--data-binary",
        "deployed",
        &blob,
    ]);
    let read = curl(&["-H", &bearer, &blob]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready, "200");
    assert_eq!(anonymous, "401", "a token is required");
    assert_eq!(stored, "201");
    assert_eq!(read, "200");
    assert!(state.join("blobs").is_dir() && state.join("index.sqlite").is_file());
}
