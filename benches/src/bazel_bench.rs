//! `bazel-bench`: real Bazel (Debian's `bazel-bootstrap`, 4.2.3) building
//! the same C++ workspace against the server's Bazel HTTP cache and its
//! gRPC cache (the Remote Execution API), in one run: the wall time of a
//! cold build that uploads every action, and of clean rebuilds that are
//! all remote cache hits, with the requests (HTTP) or calls (gRPC) each
//! made, counted by the server. The HTTP cache is the reference: the
//! result is the ratio gRPC / HTTP. Each protocol has a fresh server; the
//! rebuilds alternate between the two so that they share the machine's
//! state alike. Both with `bazel --batch` (a new JVM per command, as a
//! fresh CI job runs it: the gRPC client's classes load every time) and
//! with a Bazel server kept between commands.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin bazel-bench -- [REBUILDS] [LIBRARIES]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cachectl_e2e::clients::{
    BazelMode, bazel_build_in, bazel_cc_libraries, bazel_cc_workspace, bazel_clean, bazel_shutdown,
};
use cachectl_e2e::process::free_port;
use cachectl_e2e::raw_http::{Outcome, exchange};
use cachectl_e2e::{Backend, CacheServer, ServerOptions};
use serde_json::json;

/// One protocol's server and Bazel machine.
struct Side {
    name: &'static str,
    server: CacheServer,
    remote: String,
    machine: PathBuf,
    /// The server's counter of this protocol's requests.
    counter: &'static str,
}

/// One build: seconds of wall time, Bazel's own elapsed time, cache hits
/// and the requests the server saw.
struct Run {
    wall: f64,
    elapsed: f64,
    hits: u32,
    requests: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The sum of the metric `name` over its labels.
fn counter(server: &CacheServer, name: &str) -> anyhow::Result<u64> {
    let request = b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n";
    let outcome = exchange(server.address(), request, Duration::from_secs(10));
    let Outcome::Answered(response) = outcome else {
        bail!("the server did not answer /metrics: {outcome:?}");
    };
    Ok(response
        .text
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The number before `what` in Bazel's "N processes: ..." line.
fn processes(log: &str, what: &str) -> u32 {
    log.lines()
        .filter(|line| line.contains(" processes: ") || line.contains(" process: "))
        .flat_map(|line| line.split([':', ',']))
        .filter_map(|part| part.trim().trim_end_matches('.').strip_suffix(what))
        .filter_map(|number| number.trim().parse::<u32>().ok())
        .sum()
}

fn elapsed(log: &str) -> f64 {
    log.lines()
        .find_map(|line| {
            let rest = line.split("Elapsed time: ").nth(1)?;
            rest.split('s').next()?.parse().ok()
        })
        .unwrap_or(f64::NAN)
}

fn build(mode: BazelMode, workspace: &Path, side: &Side, flags: &[String]) -> anyhow::Result<Run> {
    let mut all = flags.to_vec();
    all.push(format!("--remote_cache={}", side.remote));
    let before = counter(&side.server, side.counter)?;
    let started = Instant::now();
    let (ok, log) = bazel_build_in(
        mode,
        workspace,
        &side.machine,
        &["//:banner", "//:many"],
        &all,
    );
    let wall = started.elapsed().as_secs_f64();
    if !ok {
        bail!("bazel failed ({}):\n{log}", side.name);
    }
    Ok(Run {
        wall,
        elapsed: elapsed(&log),
        hits: processes(&log, "remote cache hit"),
        requests: counter(&side.server, side.counter)? - before,
    })
}

/// A fresh server for each protocol, their Bazel machines under `work`.
fn sides(work: &Path, mode: BazelMode) -> Vec<Side> {
    [
        ("http", "cache_http_requests_total"),
        ("grpc", "cache_grpc_calls_total"),
    ]
    .into_iter()
    .map(|(name, counter)| {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let server = CacheServer::start(
            Backend::Local,
            ServerOptions::args(&["--grpc-listen", &listen]),
        );
        let remote = match name {
            "http" => server.base_url(),
            _ => format!("grpc://{listen}"),
        };
        Side {
            name,
            server,
            remote,
            machine: work.join(format!("{mode:?}").to_lowercase()).join(name),
            counter,
        }
    })
    .collect()
}

/// Each side's cold build and clean rebuilds in `mode`, as JSON.
fn measure(
    mode: BazelMode,
    workspace: &Path,
    sides: &[Side],
    flags: &[String],
    rebuilds: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut cold = Vec::new();
    for side in sides {
        eprintln!("bazel-bench: {mode:?}, {} cold build", side.name);
        cold.push(build(mode, workspace, side, flags)?);
    }
    let mut rebuilt: Vec<Vec<Run>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 0..rebuilds {
        for (index, side) in sides.iter().enumerate() {
            eprintln!(
                "bazel-bench: {mode:?}, {} clean rebuild {}/{rebuilds}",
                side.name,
                round + 1
            );
            bazel_clean(mode, workspace, &side.machine.clone());
            let run = build(mode, workspace, side, flags)?;
            if run.hits == 0 {
                bail!("{}: a clean rebuild had no remote cache hit", side.name);
            }
            rebuilt[index].push(run);
        }
    }
    if mode == BazelMode::Server {
        for side in sides {
            bazel_shutdown(workspace, &side.machine.clone());
        }
    }
    let report = |index: usize| {
        let runs = &rebuilt[index];
        json!({
            "cold_wall_s": cold[index].wall,
            "cold_requests": cold[index].requests,
            "rebuild_wall_s_median": median(runs.iter().map(|r| r.wall).collect()),
            "rebuild_bazel_elapsed_s_median": median(runs.iter().map(|r| r.elapsed).collect()),
            "rebuild_hits": runs[0].hits,
            "rebuild_requests": runs[0].requests,
        })
    };
    let (http, grpc) = (report(0), report(1));
    let ratio =
        |key: &str| grpc[key].as_f64().unwrap_or(f64::NAN) / http[key].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "http": http,
        "grpc": grpc,
        "grpc_over_http": {
            "cold_wall": ratio("cold_wall_s"),
            "rebuild_wall": ratio("rebuild_wall_s_median"),
            "rebuild_bazel_elapsed": ratio("rebuild_bazel_elapsed_s_median"),
            "rebuild_requests": ratio("rebuild_requests"),
        },
    }))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rebuilds: usize = args
        .next()
        .map_or(Ok(5), |arg| arg.parse())
        .context("REBUILDS must be a whole number")?;
    let libraries: usize = args
        .next()
        .map_or(Ok(40), |arg| arg.parse())
        .context("LIBRARIES must be a whole number")?;
    let work = tempfile::tempdir()?;
    let workspace = work.path().join("ws");
    let flags = bazel_cc_workspace(&workspace);
    bazel_cc_libraries(&workspace, libraries);
    let batch = measure(
        BazelMode::Batch,
        &workspace,
        &sides(work.path(), BazelMode::Batch),
        &flags,
        rebuilds,
    )?;
    let server = measure(
        BazelMode::Server,
        &workspace,
        &sides(work.path(), BazelMode::Server),
        &flags,
        rebuilds,
    )?;
    let results = json!({
        "machine": cachectl_e2e::machine::facts("Bazel and the server share the cores; servers on loopback"),
        "workspace": { "libraries": libraries + 1, "binaries": 2, "genrules": 1 },
        "rebuilds": rebuilds,
        "batch": batch,
        "bazel_server": server,
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
