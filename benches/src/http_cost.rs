//! `http-cost`: what one request costs cache-server and nginx, measured
//! from outside each process on the same files, in the same run:
//!
//! - a 4 KiB GET (cache-server with tokens required and a read token on
//!   every request; `wrk`, 2 threads, 32 connections, 4 s), and a 1 GiB GET
//!   (`curl`, 3 in a row);
//! - per request (per GiB for the large GET): the server's CPU time, user
//!   and system (`/proc/PID/stat`), its system calls and context switches
//!   (`perf stat`), and which system calls (`strace -c -f`, in a run of its
//!   own: tracing slows the server, the calls per request stay);
//! - per request too, the machine's wake-ups of one CPU by another
//!   (rescheduling and function-call interrupts, `/proc/interrupts`),
//!   client's and server's together: each wakes a CPU that may be idle,
//!   which a virtual machine charges dearly;
//! - with `HTTP_COST_BASELINE_SERVER=PATH`, an earlier `cache-server` binary
//!   the same way: the "before" column (`scripts/bench-baseline` builds
//!   one).
//!
//! The servers take turns for `HTTP_COST_ROUNDS` rounds (3), and each
//! figure is the median of its rounds.
//!
//! ```text
//! scripts/install-bench-deps    # wrk, nginx, perf, strace
//! cargo run --release -p cachectl-benches --bin http-cost
//! ```
//!
//! Prints JSON on stdout and a Markdown table on stderr.

mod http_setup;
mod wrk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use cachectl_e2e::Nginx;
use cachectl_e2e::server::CacheServer;
use http_setup::{LARGE_MIB, secured_server, write_large, write_small};
use serde_json::json;

/// Length of one `wrk` run.
const WRK_SECONDS: u64 = 4;

/// One server under measurement.
struct Contender {
    name: &'static str,
    /// The processes whose costs count (nginx: its workers).
    pids: Vec<u32>,
    base_url: String,
    small_paths: Vec<String>,
    large_path: String,
    token: Option<String>,
}

/// What one workload cost a server, in total.
#[derive(Debug, Clone, Copy)]
struct Cost {
    user_seconds: f64,
    system_seconds: f64,
    syscalls: f64,
    context_switches: f64,
    /// The machine's inter-processor interrupts: one CPU waking another.
    cpu_wakeups: f64,
}

impl Cost {
    /// `user + system = total`, in seconds times `scale`, with `decimals`.
    fn cpu(&self, scale: f64, decimals: usize) -> String {
        let (user, system) = (self.user_seconds * scale, self.system_seconds * scale);
        format!(
            "{user:.decimals$} + {system:.decimals$} = {:.decimals$}",
            user + system
        )
    }

    fn per(self, units: f64) -> Self {
        Self {
            user_seconds: self.user_seconds / units,
            system_seconds: self.system_seconds / units,
            syscalls: self.syscalls / units,
            context_switches: self.context_switches / units,
            cpu_wakeups: self.cpu_wakeups / units,
        }
    }
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn clock_ticks() -> anyhow::Result<f64> {
    let output = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// User and system seconds `pids` have used so far (all their threads).
fn cpu_seconds(pids: &[u32], ticks: f64) -> anyhow::Result<(f64, f64)> {
    let (mut user, mut system) = (0.0, 0.0);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15, the 12th and 13th after it.
        user += fields.get(11).context("utime")?.parse::<f64>()? / ticks;
        system += fields.get(12).context("stime")?.parse::<f64>()? / ticks;
    }
    Ok((user, system))
}

/// The machine's rescheduling and function-call interrupts so far (the
/// `RES` and `CAL` rows of `/proc/interrupts`, all CPUs).
fn cpu_wakeups() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/interrupts")?;
    let mut total = 0.0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if matches!(fields.next(), Some("RES:" | "CAL:")) {
            total += fields
                .map_while(|field| field.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    Ok(total)
}

/// A tracer attached to `pids` until stopped with SIGINT.
fn attach(program: &str, args: &[String]) -> anyhow::Result<Child> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {program} (scripts/install-bench-deps)"))?;
    // Attaching takes a moment; the workload must not start before.
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn interrupt(mut child: Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok(())
}

fn pid_list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `work` while counting what it costs `pids`; its result and the cost.
fn measured<T>(
    pids: &[u32],
    scratch: &Path,
    ticks: f64,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Cost)> {
    let out = scratch.join("perf.csv");
    let perf = attach(
        "perf",
        &[
            "stat".into(),
            "-x,".into(),
            "-o".into(),
            out.display().to_string(),
            "-e".into(),
            "raw_syscalls:sys_enter,context-switches".into(),
            "-p".into(),
            pid_list(pids),
        ],
    )?;
    let before = cpu_seconds(pids, ticks)?;
    let wakeups_before = cpu_wakeups()?;
    let result = work();
    let wakeups = cpu_wakeups()? - wakeups_before;
    let after = cpu_seconds(pids, ticks)?;
    interrupt(perf)?;
    let result = result?;
    let text = std::fs::read_to_string(&out)?;
    let counter = |event: &str| -> anyhow::Result<f64> {
        text.lines()
            .find(|line| line.split(',').nth(2) == Some(event))
            .and_then(|line| line.split(',').next()?.parse().ok())
            .with_context(|| format!("no {event} in perf's output:\n{text}"))
    };
    Ok((
        result,
        Cost {
            user_seconds: after.0 - before.0,
            system_seconds: after.1 - before.1,
            syscalls: counter("raw_syscalls:sys_enter")?,
            context_switches: counter("context-switches")?,
            cpu_wakeups: wakeups,
        },
    ))
}

/// Runs `work` under `strace -c -f`; its result and the calls by name.
fn traced<T>(
    pids: &[u32],
    scratch: &Path,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, f64>)> {
    let out = scratch.join("strace.txt");
    let mut args: Vec<String> = vec![
        "-c".into(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    for pid in pids {
        args.push("-p".into());
        args.push(pid.to_string());
    }
    let strace = attach("strace", &args)?;
    let result = work();
    interrupt(strace)?;
    let result = result?;
    let mut calls = BTreeMap::new();
    for line in std::fs::read_to_string(&out)?.lines() {
        // "% time  seconds  usecs/call  calls  [errors]  syscall"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(count)) = (fields.last(), fields.get(3)) else {
            continue;
        };
        if let Ok(count) = count.parse::<f64>()
            && fields[0].parse::<f64>().is_ok()
            && *name != "total"
        {
            calls.insert((*name).to_owned(), count);
        }
    }
    Ok((result, calls))
}

impl Contender {
    fn small_load(&self, scratch: &Path, seconds: u64) -> anyhow::Result<f64> {
        let load = wrk::Load {
            threads: 2,
            connections: 32,
            seconds,
        };
        let measured = wrk::run_as(
            &self.base_url,
            &self.small_paths,
            load,
            (scratch, self.name),
            self.token.as_deref(),
        )?;
        Ok(measured.requests_per_second * seconds as f64)
    }

    fn large_gets(&self, count: usize) -> anyhow::Result<f64> {
        let url = format!("{}{}", self.base_url, self.large_path);
        for _ in 0..count {
            let mut command = Command::new("curl");
            command.args(["-fsS", "-o", "/dev/null"]);
            if let Some(token) = &self.token {
                command.args(["-H", &format!("Authorization: Bearer {token}")]);
            }
            if !command.arg(&url).status()?.success() {
                bail!("{}: the 1 GiB GET failed", self.name);
            }
        }
        Ok(count as f64)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The medians, one per field, of `costs`.
fn median_cost(costs: &[Cost]) -> Cost {
    let field = |of: fn(&Cost) -> f64| median(costs.iter().map(of).collect());
    Cost {
        user_seconds: field(|cost| cost.user_seconds),
        system_seconds: field(|cost| cost.system_seconds),
        syscalls: field(|cost| cost.syscalls),
        context_switches: field(|cost| cost.context_switches),
        cpu_wakeups: field(|cost| cost.cpu_wakeups),
    }
}

/// The 8 calls of `calls` made most, each made at least once every 20
/// units, per unit: `recvfrom 1.00, writev 1.00`.
fn calls_per(calls: &BTreeMap<String, f64>, units: f64) -> String {
    let mut per: Vec<(&String, f64)> = calls
        .iter()
        .map(|(name, count)| (name, count / units))
        .filter(|(_, count)| *count >= 0.05)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per.iter()
        .take(8)
        .map(|(name, count)| format!("{name} {count:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = std::env::var("HTTP_COST_ROUNDS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|rounds| *rounds > 0)
        .unwrap_or(3);
    let ticks = clock_ticks()?;
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("www");
    std::fs::create_dir_all(root.join("cas"))?;
    let nginx_paths = write_small(&root)?;
    let hex = write_large(&root, scratch.path())?;
    let large_file = root.join("cas").join(&hex);
    let nginx = Nginx::serve_files(&root, 2);

    let mut servers: Vec<(&'static str, Option<PathBuf>)> = vec![("cache-server", None)];
    if let Some(binary) = std::env::var_os("HTTP_COST_BASELINE_SERVER") {
        servers.push(("baseline cache-server", Some(PathBuf::from(binary))));
    }
    let mut held: Vec<CacheServer> = Vec::new();
    let mut contenders = Vec::new();
    for (name, binary) in servers {
        let (server, reader, paths) = secured_server(binary).await?;
        let writer = server.create_token("write", "bench-large", &[]);
        let put = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {writer}"))
            .arg("-T")
            .arg(&large_file)
            .arg(server.url(&format!("/v1/cas/{hex}")))
            .status()?;
        if !put.success() {
            bail!("{name}: uploading the 1 GiB blob failed");
        }
        contenders.push(Contender {
            name,
            pids: vec![server.pid().context("the server runs")?],
            base_url: server.base_url(),
            small_paths: paths,
            large_path: format!("/v1/cas/{hex}"),
            token: Some(reader),
        });
        held.push(server);
    }
    contenders.push(Contender {
        name: "nginx",
        pids: nginx.pids().into_iter().skip(1).collect(),
        base_url: nginx.base_url(),
        small_paths: nginx_paths,
        large_path: format!("/cas/{hex}"),
        token: None,
    });

    let mut small: Vec<Vec<Cost>> = vec![Vec::new(); contenders.len()];
    let mut large: Vec<Vec<Cost>> = vec![Vec::new(); contenders.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for turn in 0..contenders.len() {
            let index = (round + turn) % contenders.len();
            let contender = &contenders[index];
            let (requests, cost) = measured(&contender.pids, scratch.path(), ticks, || {
                contender.small_load(scratch.path(), WRK_SECONDS)
            })?;
            rates[index].push(requests / WRK_SECONDS as f64);
            small[index].push(cost.per(requests));
            let (gets, cost) = measured(&contender.pids, scratch.path(), ticks, || {
                contender.large_gets(3)
            })?;
            large[index].push(cost.per(gets * LARGE_MIB as f64 / 1024.0));
        }
    }
    // Which calls: one traced run each.
    let mut names = Vec::new();
    for contender in &contenders {
        let (requests, small_calls) = traced(&contender.pids, scratch.path(), || {
            contender.small_load(scratch.path(), 2)
        })?;
        let (gets, large_calls) =
            traced(&contender.pids, scratch.path(), || contender.large_gets(1))?;
        names.push((
            calls_per(&small_calls, requests),
            calls_per(&large_calls, gets * LARGE_MIB as f64 / 1024.0),
        ));
    }

    let mut report = Vec::new();
    eprintln!(
        "\n| per request | {} |",
        contenders
            .iter()
            .map(|contender| contender.name)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    eprintln!("| --- |{}", " --- |".repeat(contenders.len()));
    let small: Vec<Cost> = small.iter().map(|costs| median_cost(costs)).collect();
    let large: Vec<Cost> = large.iter().map(|costs| median_cost(costs)).collect();
    let rates: Vec<f64> = rates.into_iter().map(median).collect();
    let row = |label: &str, cell: &dyn Fn(usize) -> String| {
        eprintln!(
            "| {label} | {} |",
            (0..contenders.len())
                .map(cell)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    };
    row(
        "4 KiB GET: requests per second (CPU shared with wrk)",
        &|i| format!("{:.0}", rates[i]),
    );
    row("4 KiB GET: CPU µs, user + system", &|i| {
        small[i].cpu(1e6, 1)
    });
    row("4 KiB GET: system calls", &|i| {
        format!("{:.2}", small[i].syscalls)
    });
    row("4 KiB GET: context switches", &|i| {
        format!("{:.2}", small[i].context_switches)
    });
    row("4 KiB GET: CPU wake-ups (IPIs, machine-wide)", &|i| {
        format!("{:.3}", small[i].cpu_wakeups)
    });
    row("4 KiB GET: which calls", &|i| names[i].0.clone());
    row("1 GiB GET: CPU ms, user + system", &|i| {
        large[i].cpu(1e3, 0)
    });
    row("1 GiB GET: system calls", &|i| {
        format!("{:.0}", large[i].syscalls)
    });
    row("1 GiB GET: context switches", &|i| {
        format!("{:.0}", large[i].context_switches)
    });
    row("1 GiB GET: which calls", &|i| names[i].1.clone());
    for (i, contender) in contenders.iter().enumerate() {
        report.push(json!({
            "server": contender.name,
            "small_get": {
                "requests_per_second": rates[i],
                "user_us": small[i].user_seconds * 1e6,
                "system_us": small[i].system_seconds * 1e6,
                "syscalls": small[i].syscalls,
                "context_switches": small[i].context_switches,
                "cpu_wakeups": small[i].cpu_wakeups,
                "calls": names[i].0,
            },
            "large_get_per_gib": {
                "user_ms": large[i].user_seconds * 1e3,
                "system_ms": large[i].system_seconds * 1e3,
                "syscalls": large[i].syscalls,
                "context_switches": large[i].context_switches,
                "cpu_wakeups": large[i].cpu_wakeups,
                "calls": names[i].1,
            },
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "rounds": rounds, "servers": report }))?
    );
    drop(held);
    Ok(())
}
