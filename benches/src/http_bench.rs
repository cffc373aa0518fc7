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
//! - a 1 GiB blob: GET throughput with `curl` (median of 3);
//! - verified PUT throughput of that blob with `curl -T`.
//!
//! ```text
//! scripts/install-bench-deps
//! cargo run --release -p cachectl-benches --bin http-bench
//! ```
//!
//! Prints JSON on stdout, a summary on stderr.

mod wrk;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use cachectl_e2e::Nginx;
use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};
use serde_json::json;

const SMALL_BLOBS: usize = 1000;
const SMALL_SIZE: usize = 4096;
const LARGE_MIB: usize = 1024;
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

/// Uploads the small blobs to `server` (as `token`); their paths.
async fn upload_small(server: &CacheServer, token: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for i in 0..SMALL_BLOBS {
        let blob = random_bytes(SMALL_SIZE, i as u64 + 1);
        let path = format!("/v1/cas/{}", digest(&blob));
        let mut request = server.client.put(server.url(&path)).body(blob);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("upload failed: {}", response.status());
        }
        paths.push(path);
    }
    Ok(paths)
}

/// A server requiring tokens (the workspace's, or `binary`), with the
/// small blobs uploaded; its read token and their paths.
async fn secured_server(
    binary: Option<std::path::PathBuf>,
) -> anyhow::Result<(CacheServer, String, Vec<String>)> {
    let options = ServerOptions {
        binary,
        ..ServerOptions::args(&["--auth", "required"])
    };
    let server = CacheServer::start(Backend::Local, options);
    let writer = server.create_token("write", "bench-writer", &[]);
    let reader = server.create_token("read", "bench-reader", &[]);
    let paths = upload_small(&server, Some(&writer)).await?;
    Ok((server, reader, paths))
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("www");
    std::fs::create_dir_all(root.join("cas"))?;
    let server = CacheServer::start(Backend::Local, ServerOptions::default());

    // The same 4 KiB blobs on all of them.
    let server_paths = upload_small(&server, None).await?;
    let mut nginx_paths = Vec::new();
    for i in 0..SMALL_BLOBS {
        let blob = random_bytes(SMALL_SIZE, i as u64 + 1);
        let hex = digest(&blob).to_string();
        std::fs::write(root.join("cas").join(&hex), &blob)?;
        nginx_paths.push(format!("/cas/{hex}"));
    }
    let (secured, reader, secured_paths) = secured_server(None).await?;
    let baseline_binary =
        std::env::var_os("HTTP_BENCH_BASELINE_SERVER").map(std::path::PathBuf::from);
    let baseline = match &baseline_binary {
        Some(binary) => Some(secured_server(Some(binary.clone())).await?),
        None => None,
    };
    let nginx = Nginx::serve_files(&root, 2);
    let rounds = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|rounds| *rounds > 0)
        .unwrap_or(DEFAULT_ROUNDS);
    let (mut nginx_runs, mut server_runs, mut secured_runs, mut baseline_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let contenders = if baseline.is_some() { 4 } else { 3 };
    for round in 0..rounds {
        eprintln!("4 KiB GETs, round {} of {rounds}", round + 1);
        // Each server leads a round in turn, so that none always runs
        // right after the same neighbour.
        for turn in 0..contenders {
            match (round + turn) % contenders {
                0 => nginx_runs.push(wrk(
                    &nginx.base_url(),
                    &nginx_paths,
                    scratch.path(),
                    "nginx",
                )?),
                1 => server_runs.push(wrk(
                    &server.base_url(),
                    &server_paths,
                    scratch.path(),
                    "server",
                )?),
                2 => secured_runs.push(wrk_as(
                    &secured,
                    &secured_paths,
                    &reader,
                    scratch.path(),
                    "secured",
                )?),
                _ => {
                    if let Some((server, reader, paths)) = &baseline {
                        baseline_runs.push(wrk_as(
                            server,
                            paths,
                            reader,
                            scratch.path(),
                            "baseline",
                        )?);
                    }
                }
            }
        }
    }
    let runs = json!({
        "nginx": nginx_runs, "auth_off": server_runs,
        "auth_required": secured_runs, "baseline": baseline_runs,
    });
    // Rounds in which tokens-required beat nginx, of all rounds.
    let secured_wins = secured_runs
        .iter()
        .zip(&nginx_runs)
        .filter(|(secured, nginx)| secured > nginx)
        .count();
    let nginx_rps = median(nginx_runs);
    let server_rps = median(server_runs);
    let secured_rps = median(secured_runs);
    let baseline_rps = (!baseline_runs.is_empty()).then(|| median(baseline_runs));
    drop((secured, baseline));

    // One 1 GiB blob: verified PUT, then GET from both.
    let large = scratch.path().join("large.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&large)?);
        let mut hasher = blake3::Hasher::new();
        for i in 0..LARGE_MIB {
            let chunk = random_bytes(1 << 20, 10_000 + i as u64);
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.flush()?;
        let hex = hasher.finalize().to_hex().to_string();
        std::fs::rename(&large, root.join("cas").join(&hex))?;
        std::fs::write(scratch.path().join("large.hex"), &hex)?;
    }
    let hex = std::fs::read_to_string(scratch.path().join("large.hex"))?;
    let large = root.join("cas").join(&hex);
    let put = curl_speed(&[
        "%{speed_upload}",
        "-T",
        large.to_str().context("path")?,
        &server.url(&format!("/v1/cas/{hex}")),
    ])?;
    let mut server_get = Vec::new();
    let mut nginx_get = Vec::new();
    for _ in 0..3 {
        server_get.push(curl_speed(&[
            "%{speed_download}",
            &server.url(&format!("/v1/cas/{hex}")),
        ])?);
        nginx_get.push(curl_speed(&[
            "%{speed_download}",
            &format!("{}/cas/{hex}", nginx.base_url()),
        ])?);
    }
    let (server_get, nginx_get) = (median(server_get), median(nginx_get));

    eprintln!(
        "4 KiB GET with tokens required, median of {rounds} rounds: {secured_rps:.0} req/s ({:.2} of auth off, {:.2} of nginx; above nginx in {secured_wins} of {rounds} rounds){}",
        secured_rps / server_rps,
        secured_rps / nginx_rps,
        baseline_rps.map_or(String::new(), |rps| format!(
            "; baseline binary {rps:.0} req/s ({:.2} of auth off)",
            rps / server_rps
        ))
    );
    eprintln!(
        "4 KiB GET: cache-server {server_rps:.0} req/s, nginx {nginx_rps:.0} req/s, ratio {:.2}; \
         1 GiB GET: cache-server {:.0} MiB/s, nginx {:.0} MiB/s, ratio {:.2}; verified PUT {:.0} MiB/s",
        server_rps / nginx_rps,
        mib(server_get),
        mib(nginx_get),
        server_get / nginx_get,
        mib(put)
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "small_get": {
                "blob_bytes": SMALL_SIZE, "blobs": SMALL_BLOBS, "seconds": WRK_SECONDS,
                "rounds": rounds, "runs": runs,
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
                    "binary": baseline_binary.as_ref().map(|path| path.display().to_string()),
                    "auth_required_requests_per_second": rps,
                    "auth_required_over_auth_off": rps / server_rps,
                })),
            },
            "large_get": {
                "bytes": LARGE_MIB << 20,
                "server_mib_per_second": mib(server_get),
                "nginx_mib_per_second": mib(nginx_get),
                "ratio": server_get / nginx_get,
                "goal_ratio": 0.8,
            },
            "verified_put_mib_per_second": mib(put),
        }))?
    );
    Ok(())
}
