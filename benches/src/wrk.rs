//! Running `wrk` over a list of paths and reading its figures.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// How one `wrk` run loads the server.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// Length of the run.
    pub seconds: u64,
}

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Completed requests per second.
    pub requests_per_second: f64,
    /// Response bytes per second (headers included, as wrk counts).
    #[allow(dead_code)] // not every benchmark reports it
    pub bytes_per_second: f64,
}

/// Runs `wrk` cycling over `paths` on `base`; fails on any 4xx/5xx answer
/// or socket error.
#[allow(dead_code)] // http-cost always goes through run_as
pub fn run(
    base: &str,
    paths: &[String],
    load: Load,
    scratch: &Path,
    name: &str,
) -> anyhow::Result<Measured> {
    run_as(base, paths, load, (scratch, name), None)
}

/// [`run`] with every request carrying `Authorization: Bearer {token}`
/// when a token is given.
pub fn run_as(
    base: &str,
    paths: &[String],
    load: Load,
    (scratch, name): (&Path, &str),
    token: Option<&str>,
) -> anyhow::Result<Measured> {
    let script = scratch.join(format!("{name}.lua"));
    let mut file = std::fs::File::create(&script)?;
    writeln!(file, "local paths = {{")?;
    for path in paths {
        writeln!(file, "  \"{path}\",")?;
    }
    writeln!(
        file,
        "}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend"
    )?;
    drop(file);
    let mut command = Command::new("wrk");
    if let Some(token) = token {
        // wrk.format() without headers sends the -H ones.
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"));
    }
    let output = command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .args(["--timeout", "60s", "-s"])
        .arg(&script)
        .arg(base)
        .output()
        .context("running wrk (scripts/install-bench-deps)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("{name}: wrk saw errors:\n{text}");
    }
    let field = |label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label).map(str::trim))
            .with_context(|| format!("no {label} in wrk output:\n{text}"))
    };
    Ok(Measured {
        requests_per_second: field("Requests/sec:")?.parse()?,
        bytes_per_second: parse_rate(field("Transfer/sec:")?)
            .with_context(|| format!("unreadable Transfer/sec in:\n{text}"))?,
    })
}

/// `123.45MB` (wrk's binary units) in bytes.
fn parse_rate(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let factor = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * factor)
}
