//! `http-bench`: cache-server against nginx serving the same bytes from
//! disk, both on loopback, in the same run:
//!
//! - 4 KiB blobs: GET requests per second with `wrk` (2 threads, 32
//!   connections, cycling over 1,000 blobs), with auth off and with
//!   tokens required (a read token on every request); with
//!   `HTTP_BENCH_BASELINE_SERVER=PATH` also another `cache-server` binary
//!   (an earlier commit, see `scripts/bench-baseline`) with tokens required.
//!   The servers take turns, 4 s each, for 9 rounds (`HTTP_BENCH_ROUNDS`),
//!   each leading a round in turn, and each figure is the median of its
//!   rounds: on this 2-core machine
//!   one 10 s run of the same server moved by ±10 % from one run to the
//!   next, more than the differences measured;
//! - a 1 GiB blob: GET throughput with `curl` (median of 3, the servers
//!   taking turns; with `HTTP_BENCH_BASELINE_SERVER` that binary's too);
//! - verified PUT throughput of that blob with `curl -T`.
//!
//! `HTTP_BENCH_ONLY=large` skips the 4 KiB rounds: what a bisect of the
//! large GET runs (`scripts/bench-baseline REV` passes it on).
//!
//! ```text
//! scripts/install-bench-deps
//! cargo run --release -p cachectl-benches --bin http-bench
//! ```
//!
//! Prints JSON on stdout, a summary on stderr.

mod http_setup;
mod wrk;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use cachectl_e2e::Nginx;
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};
use http_setup::{
    LARGE_MIB, SMALL_BLOBS, SMALL_SIZE, secured_server, upload_small, write_large, write_small,
};
use serde_json::json;

/// Length of one server's turn in a round.
const WRK_SECONDS: u64 = 4;
/// Rounds of turns, unless `HTTP_BENCH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 9;

/// Requests per second of `wrk` cycling over `paths` on `base`.
fn wrk(base: &str, paths: &[String], scratch: &Path, name: &str) -> anyhow::Result<f64> {
    let load = wrk::Load {
        threads: 2,
        connections: 32,
        seconds: WRK_SECONDS,
    };
    Ok(wrk::run(base, paths, load, scratch, name)?.requests_per_second)
}

/// Requests per second of `wrk` on `server`, every request with `token`.
fn wrk_as(
    server: &CacheServer,
    paths: &[String],
    token: &str,
    scratch: &Path,
    name: &str,
) -> anyhow::Result<f64> {
    let load = wrk::Load {
        threads: 2,
        connections: 32,
        seconds: WRK_SECONDS,
    };
    Ok(wrk::run_as(
        &server.base_url(),
        paths,
        load,
        (scratch, name),
        Some(token),
    )?
    .requests_per_second)
}

/// Bytes per second of one `curl` transfer.
fn curl_speed(args: &[&str]) -> anyhow::Result<f64> {
    let output = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-w"])
        .args(args)
        .output()
        .context("running curl")?;
    if !output.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mib(bytes_per_second: f64) -> f64 {
    bytes_per_second / (1024.0 * 1024.0)
}

/// What the 4 KiB rounds measured: each server's runs, in requests per
/// second.
#[derive(Default)]
struct SmallRuns {
    nginx: Vec<f64>,
    auth_off: Vec<f64>,
    auth_required: Vec<f64>,
    baseline: Vec<f64>,
}

/// `1,234,567`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `HTTP_BENCH_ONLY=large` measures only the 1 GiB GET (and PUT): what
    // a bisect of the large GET needs, in a minute.
    let large_only = std::env::var("HTTP_BENCH_ONLY").is_ok_and(|only| only == "large");
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("www");
    std::fs::create_dir_all(root.join("cas"))?;
    let server = CacheServer::start(Backend::Local, ServerOptions::default());
    let baseline_binary =
        std::env::var_os("HTTP_BENCH_BASELINE_SERVER").map(std::path::PathBuf::from);
    let nginx = Nginx::serve_files(&root, 2);
    let rounds = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|rounds| *rounds > 0)
        .unwrap_or(DEFAULT_ROUNDS);
    let runs = if large_only {
        SmallRuns::default()
    } else {
        small_rounds(
            &server,
            &root,
            scratch.path(),
            &nginx,
            baseline_binary.as_ref(),
            rounds,
        )
        .await?
    };

    // One 1 GiB blob: verified PUT, then GET from each, taking turns.
    let hex = write_large(&root, scratch.path())?;
    let large = root.join("cas").join(&hex);
    let put = curl_speed(&[
        "%{speed_upload}",
        "-T",
        large.to_str().context("path")?,
        &server.url(&format!("/v1/cas/{hex}")),
    ])?;
    let baseline_server = match &baseline_binary {
        Some(binary) => {
            let baseline = CacheServer::start(
                Backend::Local,
                ServerOptions {
                    binary: Some(binary.clone()),
                    ..ServerOptions::default()
                },
            );
            curl_speed(&[
                "%{speed_upload}",
                "-T",
                large.to_str().context("path")?,
                &baseline.url(&format!("/v1/cas/{hex}")),
            ])?;
            Some(baseline)
        }
        None => None,
    };
    let (mut server_get, mut nginx_get, mut baseline_get) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        server_get.push(curl_speed(&[
            "%{speed_download}",
            &server.url(&format!("/v1/cas/{hex}")),
        ])?);
        nginx_get.push(curl_speed(&[
            "%{speed_download}",
            &format!("{}/cas/{hex}", nginx.base_url()),
        ])?);
        if let Some(baseline) = &baseline_server {
            baseline_get.push(curl_speed(&[
                "%{speed_download}",
                &baseline.url(&format!("/v1/cas/{hex}")),
            ])?);
        }
    }
    let large_runs = json!({
        "server": server_get.iter().map(|speed| mib(*speed)).collect::<Vec<_>>(),
        "nginx": nginx_get.iter().map(|speed| mib(*speed)).collect::<Vec<_>>(),
        "baseline": baseline_get.iter().map(|speed| mib(*speed)).collect::<Vec<_>>(),
    });
    let (server_get, nginx_get) = (median(server_get), median(nginx_get));
    let baseline_get = (!baseline_get.is_empty()).then(|| median(baseline_get));

    let small = (!large_only).then(|| summarize_small(&runs, rounds, baseline_binary.as_ref()));
    eprintln!(
        "1 GiB GET, median of 3 (MiB/s): nginx {} | cache-server {} ({:.2}x){}; verified PUT {} MiB/s",
        thousands(mib(nginx_get)),
        thousands(mib(server_get)),
        server_get / nginx_get,
        baseline_get.map_or(String::new(), |speed| format!(
            " | baseline binary {} ({:.2}x)",
            thousands(mib(speed)),
            speed / nginx_get
        )),
        thousands(mib(put))
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "small_get": small,
            "large_get": {
                "bytes": LARGE_MIB << 20,
                "runs_mib_per_second": large_runs,
                "server_mib_per_second": mib(server_get),
                "nginx_mib_per_second": mib(nginx_get),
                "ratio": server_get / nginx_get,
                "baseline": baseline_get.map(|speed| json!({
                    "binary": baseline_binary.as_ref().map(|path| path.display().to_string()),
                    "mib_per_second": mib(speed),
                    "ratio": speed / nginx_get,
                })),
                "goal_ratio": 1.0,
            },
            "verified_put_mib_per_second": mib(put),
        }))?
    );
    Ok(())
}

/// The 4 KiB rounds: the same blobs on nginx, on `server` (auth off), on a
/// server requiring tokens and, with `baseline`, on that binary requiring
/// tokens; the servers take turns, each leading a round in turn.
async fn small_rounds(
    server: &CacheServer,
    root: &Path,
    scratch: &Path,
    nginx: &Nginx,
    baseline: Option<&std::path::PathBuf>,
    rounds: usize,
) -> anyhow::Result<SmallRuns> {
    let server_paths = upload_small(server, None).await?;
    let nginx_paths = write_small(root)?;
    let (secured, reader, secured_paths) = secured_server(None).await?;
    let baseline = match baseline {
        Some(binary) => Some(secured_server(Some(binary.clone())).await?),
        None => None,
    };
    let mut runs = SmallRuns::default();
    let contenders = if baseline.is_some() { 4 } else { 3 };
    for round in 0..rounds {
        eprintln!("4 KiB GETs, round {} of {rounds}", round + 1);
        // Each server leads a round in turn, so that none always runs
        // right after the same neighbour.
        for turn in 0..contenders {
            match (round + turn) % contenders {
                0 => runs
                    .nginx
                    .push(wrk(&nginx.base_url(), &nginx_paths, scratch, "nginx")?),
                1 => runs
                    .auth_off
                    .push(wrk(&server.base_url(), &server_paths, scratch, "server")?),
                2 => runs.auth_required.push(wrk_as(
                    &secured,
                    &secured_paths,
                    &reader,
                    scratch,
                    "secured",
                )?),
                _ => {
                    if let Some((server, reader, paths)) = &baseline {
                        runs.baseline
                            .push(wrk_as(server, paths, reader, scratch, "baseline")?);
                    }
                }
            }
        }
    }
    Ok(runs)
}

/// The 4 KiB figures (printed on stderr with both servers' absolute
/// figures beside each ratio) as JSON.
fn summarize_small(
    runs: &SmallRuns,
    rounds: usize,
    baseline_binary: Option<&std::path::PathBuf>,
) -> serde_json::Value {
    // Rounds in which tokens-required beat nginx, of all rounds.
    let secured_wins = runs
        .auth_required
        .iter()
        .zip(&runs.nginx)
        .filter(|(secured, nginx)| secured > nginx)
        .count();
    let nginx_rps = median(runs.nginx.clone());
    let server_rps = median(runs.auth_off.clone());
    let secured_rps = median(runs.auth_required.clone());
    let baseline_rps = (!runs.baseline.is_empty()).then(|| median(runs.baseline.clone()));
    eprintln!(
        "4 KiB GET, median of {rounds} rounds (req/s): nginx {} | auth off {} ({:.2}x) | tokens required {} ({:.2}x, above nginx in {secured_wins} of {rounds} rounds){}",
        thousands(nginx_rps),
        thousands(server_rps),
        server_rps / nginx_rps,
        thousands(secured_rps),
        secured_rps / nginx_rps,
        baseline_rps.map_or(String::new(), |rps| format!(
            " | baseline binary, tokens required {} ({:.2}x)",
            thousands(rps),
            rps / nginx_rps
        ))
    );
    json!({
        "blob_bytes": SMALL_SIZE, "blobs": SMALL_BLOBS, "seconds": WRK_SECONDS,
        "rounds": rounds,
        "runs": {
            "nginx": runs.nginx, "auth_off": runs.auth_off,
            "auth_required": runs.auth_required, "baseline": runs.baseline,
        },
        "auth_required_above_nginx_in_rounds": secured_wins,
        "server_requests_per_second": server_rps,
        "nginx_requests_per_second": nginx_rps,
        "ratio": server_rps / nginx_rps,
        "goal_ratio": 0.7,
        "auth_required_requests_per_second": secured_rps,
        "auth_required_over_auth_off": secured_rps / server_rps,
        "auth_required_over_nginx": secured_rps / nginx_rps,
        "auth_required_goal_over_nginx": 1.0,
        "baseline": baseline_rps.map(|rps| json!({
            "binary": baseline_binary.map(|path| path.display().to_string()),
            "auth_required_requests_per_second": rps,
            "auth_required_over_auth_off": rps / server_rps,
            "auth_required_over_nginx": rps / nginx_rps,
        })),
    })
}
