//! `cluster-bench`: how throughput grows with cache-server replicas over a
//! three-node Garage cluster, behind nginx, in one run:
//!
//! - 4 KiB blob GETs, requests per second (`wrk`, 2 threads, 64
//!   connections, cycling over 512 blobs);
//! - 64 MiB blob GETs, MiB per second (`wrk`, 1 thread, 4 connections,
//!   cycling over 2 blobs);
//!
//! each with 1, 2 and 3 replicas, then the 64 MiB GETs again with
//! `--redirect-reads-over 1MiB`: `wrk` does not follow redirects, so it
//! measures how many 307s the replicas hand out per second, and a client
//! that follows them (reqwest, 4 at a time) measures the MiB per second
//! clients then get from Garage. Also measured: one replica reached
//! directly (no nginx), the reference the balanced figures are ratios of.
//!
//! ```text
//! scripts/install-bench-deps
//! cargo run --release -p cachectl-benches --bin cluster-bench
//! ```
//!
//! Prints JSON on stdout, a summary on stderr.

mod wrk;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::process::cpu_seconds;
use cachectl_e2e::{Backend, CacheServer, GarageCluster, Nginx, ServerOptions};
use futures::StreamExt;
use serde_json::json;

const SMALL_SIZE: usize = 4 * 1024;
const SMALL_BLOBS: usize = 512;
const LARGE_SIZE: usize = 64 * 1024 * 1024;
const LARGE_BLOBS: usize = 2;
const SECONDS: u64 = 10;
const MIB: f64 = 1024.0 * 1024.0;

fn replicas(cluster: &GarageCluster, args: &[&str]) -> Vec<CacheServer> {
    (0..3)
        .map(|n| {
            let id = format!("r{n}");
            let mut all = vec!["--replica-id", id.as_str(), "--auth", "off"];
            all.extend_from_slice(args);
            CacheServer::start(
                Backend::garage(cluster, n, "bench"),
                ServerOptions::args(&all),
            )
        })
        .collect()
}

async fn upload(base: &str, blobs: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut paths = Vec::new();
    for blob in blobs {
        let path = format!("/v1/cas/{}", digest(blob));
        let status = http
            .put(format!("{base}{path}"))
            .body(blob.clone())
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("upload answered {status}");
        }
        paths.push(path);
    }
    Ok(paths)
}

/// MiB per second clients get downloading `paths` from `base`, following
/// redirects, `parallel` at a time, for `seconds`.
async fn follow_throughput(
    base: &str,
    paths: &[String],
    parallel: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers = (0..parallel).map(|w| {
        let (http, base, paths) = (http.clone(), base.to_owned(), paths.to_vec());
        async move {
            let mut bytes = 0u64;
            let mut i = w;
            while Instant::now() < deadline {
                let response = http
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("GET answered {}", response.status());
                }
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    bytes += chunk?.len() as u64;
                }
                i += 1;
            }
            Ok::<_, anyhow::Error>(bytes)
        }
    });
    let mut total = 0;
    for bytes in futures::future::join_all(workers).await {
        total += bytes?;
    }
    Ok(total as f64 / MIB / started.elapsed().as_secs_f64())
}

/// Processes whose CPU time a measurement accounts for, by role.
struct Roles {
    replicas: Vec<u32>,
    store: Vec<u32>,
    balancer: Vec<u32>,
}

/// CPU seconds each role used during one measurement.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    replicas: f64,
    store: f64,
    balancer: f64,
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| cpu_seconds(*pid)).sum()
}

impl Roles {
    /// Each role's CPU seconds so far.
    fn cpu(&self) -> CpuUse {
        CpuUse {
            replicas: total_cpu(&self.replicas),
            store: total_cpu(&self.store),
            balancer: total_cpu(&self.balancer),
        }
    }

    /// The CPU seconds each role used since `before` (an earlier [`Roles::cpu`]).
    fn cpu_since(&self, before: CpuUse) -> CpuUse {
        let now = self.cpu();
        CpuUse {
            replicas: now.replicas - before.replicas,
            store: now.store - before.store,
            balancer: now.balancer - before.balancer,
        }
    }
}

/// Runs `work`, returning its result and the CPU seconds each role spent.
fn with_cpu<T>(
    roles: &Roles,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, CpuUse)> {
    let before = roles.cpu();
    let result = work()?;
    Ok((result, roles.cpu_since(before)))
}

/// CPU milliseconds per request of each role.
fn per_request(cpu: CpuUse, measured: wrk::Measured) -> serde_json::Value {
    let requests = measured.requests_per_second * SECONDS as f64;
    let ms = |seconds: f64| seconds * 1000.0 / requests.max(1.0);
    json!({ "replicas": ms(cpu.replicas), "store": ms(cpu.store), "balancer": ms(cpu.balancer) })
}

/// CPU seconds per GiB served of each role.
fn per_gib(cpu: CpuUse, mib_per_second: f64, seconds: f64) -> serde_json::Value {
    let gib = mib_per_second * seconds / 1024.0;
    let s = |seconds: f64| seconds / gib.max(1e-9);
    json!({ "replicas": s(cpu.replicas), "store": s(cpu.store), "balancer": s(cpu.balancer) })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let cluster = GarageCluster::start();
    let direct = replicas(&cluster, &[]);
    let redirecting = replicas(&cluster, &["--redirect-reads-over", "1MiB"]);

    let small: Vec<Vec<u8>> = (0..SMALL_BLOBS)
        .map(|i| random_bytes(SMALL_SIZE, i as u64))
        .collect();
    let large: Vec<Vec<u8>> = (0..LARGE_BLOBS)
        .map(|i| random_bytes(LARGE_SIZE, 1_000_000 + i as u64))
        .collect();
    let small_paths = upload(&direct[0].base_url(), &small).await?;
    let large_paths = upload(&direct[0].base_url(), &large).await?;
    eprintln!("uploaded {SMALL_BLOBS} × 4 KiB and {LARGE_BLOBS} × 64 MiB through replica 0");

    let small_load = wrk::Load {
        threads: 2,
        connections: 64,
        seconds: SECONDS,
    };
    let large_load = wrk::Load {
        threads: 1,
        connections: 4,
        seconds: SECONDS,
    };
    // Warm every replica's index (and hot cache) as production traffic would.
    for server in direct.iter().chain(&redirecting) {
        let warm = wrk::Load {
            threads: 1,
            connections: 8,
            seconds: 2,
        };
        wrk::run(
            &server.base_url(),
            &small_paths,
            warm,
            scratch.path(),
            "warm",
        )?;
    }
    let alone = Roles {
        replicas: direct[0].pid().into_iter().collect(),
        store: cluster.pids(),
        balancer: Vec::new(),
    };
    let (one_direct_small, small_cpu) = with_cpu(&alone, || {
        wrk::run(
            &direct[0].base_url(),
            &small_paths,
            small_load,
            scratch.path(),
            "direct-small",
        )
    })?;
    let (one_direct_large, large_cpu) = with_cpu(&alone, || {
        wrk::run(
            &direct[0].base_url(),
            &large_paths,
            large_load,
            scratch.path(),
            "direct-large",
        )
    })?;
    eprintln!(
        "one replica, no nginx: {:.0} req/s (4 KiB), {:.0} MiB/s (64 MiB)",
        one_direct_small.requests_per_second,
        one_direct_large.bytes_per_second / MIB
    );

    let mut balanced = Vec::new();
    for count in 1..=3 {
        let addresses: Vec<_> = direct[..count].iter().map(CacheServer::address).collect();
        let nginx = Nginx::start(&addresses);
        let roles = Roles {
            replicas: direct[..count]
                .iter()
                .filter_map(CacheServer::pid)
                .collect(),
            store: cluster.pids(),
            balancer: nginx.pids(),
        };
        let name = format!("{count}-replicas");
        let (small, small_cpu) = with_cpu(&roles, || {
            wrk::run(
                &nginx.base_url(),
                &small_paths,
                small_load,
                scratch.path(),
                &format!("{name}-small"),
            )
        })?;
        let (large, large_cpu) = with_cpu(&roles, || {
            wrk::run(
                &nginx.base_url(),
                &large_paths,
                large_load,
                scratch.path(),
                &format!("{name}-large"),
            )
        })?;
        eprintln!(
            "{count} replica(s) behind nginx: {:.0} req/s (4 KiB), {:.0} MiB/s (64 MiB)",
            small.requests_per_second,
            large.bytes_per_second / MIB
        );
        balanced.push(json!({
            "replicas": count,
            "small_requests_per_second": small.requests_per_second,
            "large_mib_per_second": large.bytes_per_second / MIB,
            "small_cpu_ms_per_request": per_request(small_cpu, small),
            "large_cpu_seconds_per_gib": per_gib(large_cpu, large.bytes_per_second / MIB, SECONDS as f64),
        }));
    }

    let addresses: Vec<_> = redirecting.iter().map(CacheServer::address).collect();
    let nginx = Nginx::start(&addresses);
    let redirect_roles = Roles {
        replicas: redirecting.iter().filter_map(CacheServer::pid).collect(),
        store: cluster.pids(),
        balancer: nginx.pids(),
    };
    let redirects = wrk::run(
        &nginx.base_url(),
        &large_paths,
        small_load,
        scratch.path(),
        "redirects",
    )?;
    let started = Instant::now();
    let before = redirect_roles.cpu();
    let followed = follow_throughput(&nginx.base_url(), &large_paths, 4, SECONDS)
        .await
        .context("following redirects")?;
    let followed_cpu = redirect_roles.cpu_since(before);
    let followed_seconds = started.elapsed().as_secs_f64();

    let direct_nginx = Nginx::start(&direct.iter().map(CacheServer::address).collect::<Vec<_>>());
    let through_roles = Roles {
        replicas: direct.iter().filter_map(CacheServer::pid).collect(),
        store: cluster.pids(),
        balancer: direct_nginx.pids(),
    };
    let started = Instant::now();
    let before = through_roles.cpu();
    let served_by_replicas =
        follow_throughput(&direct_nginx.base_url(), &large_paths, 4, SECONDS).await?;
    let through_cpu = through_roles.cpu_since(before);
    let through_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "3 replicas, redirects on: {:.0} redirects/s; clients following them get {:.0} MiB/s \
         (same client through the replicas: {:.0} MiB/s)",
        redirects.requests_per_second, followed, served_by_replicas
    );

    let machine = cachectl_e2e::machine::facts(
        "Garage (3 nodes), the replicas, nginx and wrk share the cores",
    );
    let first = &balanced[0];
    let results = json!({
        "machine": machine,
        "seconds": SECONDS,
        "one_replica_direct": {
            "small_requests_per_second": one_direct_small.requests_per_second,
            "large_mib_per_second": one_direct_large.bytes_per_second / MIB,
            "small_cpu_ms_per_request": per_request(small_cpu, one_direct_small),
            "large_cpu_seconds_per_gib": per_gib(large_cpu, one_direct_large.bytes_per_second / MIB, SECONDS as f64),
        },
        "balanced": balanced,
        "scaling_small": balanced.iter().map(|b| b["small_requests_per_second"].as_f64().unwrap_or(0.0)
            / first["small_requests_per_second"].as_f64().unwrap_or(1.0)).collect::<Vec<_>>(),
        "scaling_large": balanced.iter().map(|b| b["large_mib_per_second"].as_f64().unwrap_or(0.0)
            / first["large_mib_per_second"].as_f64().unwrap_or(1.0)).collect::<Vec<_>>(),
        "redirects": {
            "replicas": 3,
            "redirects_per_second": redirects.requests_per_second,
            "following_client_mib_per_second": followed,
            "same_client_through_replicas_mib_per_second": served_by_replicas,
            "following_cpu_seconds_per_gib": per_gib(followed_cpu, followed, followed_seconds),
            "through_replicas_cpu_seconds_per_gib": per_gib(through_cpu, served_by_replicas, through_seconds),
        },
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
