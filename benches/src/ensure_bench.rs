//! `ensure-bench`: wall time of `cachectl ensure-base` (release build, a new
//! process each run, as in CI) on `examples/python-app`, cold (build and
//! push) against warm (a hit), with a real cache-server and a real registry
//! on loopback. The reference is the cold run of the same project in the same
//! run; the result is the ratio warm / cold and the absolute medians.
//!
//! A third and fourth scenario put the same project on a `from` image in
//! the registry (the Debian python image of the test dependencies, its
//! install step run inside it): once with the upstream tag tracked (one
//! manifest request per run, the default) and once with `--upstream pin`,
//! whose warm median is the reference for what tracking costs.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin ensure-bench -- [WARM_RUNS]
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::CacheServer;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::RegistryServer;
use serde_json::json;

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "build" {
                copy_dir(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn timed(project: &Project, args: &[&str]) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let run = project.cachectl(args, &[]);
    let seconds = started.elapsed().as_secs_f64();
    if run.code != 0 {
        bail!("cachectl failed:\n{}", run.stderr);
    }
    Ok((seconds, run.json()))
}

fn main() -> anyhow::Result<()> {
    let warm_runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("WARM_RUNS must be a whole number")?,
        None => 30,
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-app");
    let registry = RegistryServer::start();
    let server = CacheServer::local();
    let image = format!("{}/bench/web-base", registry.host());
    let mut results = Vec::new();

    let from = cachectl_e2e::python::push_python_image(&registry);
    let cache_url = server.base_url();
    let scenarios: [(&str, Option<&str>, &[&str]); 4] = [
        // Without `from` the example's pip runs on the host.
        ("cache-server", Some(&cache_url), &["--from="]),
        ("local records", None, &["--from="]),
        (
            "cache-server, from a tracked tag",
            Some(&cache_url),
            &["--from", &from],
        ),
        (
            "cache-server, from a pinned tag",
            Some(&cache_url),
            &["--from", &from, "--upstream", "pin"],
        ),
    ];
    for (label, cache, extra) in scenarios {
        let project = Project::new();
        copy_dir(&example, project.path())?;
        let mut args = vec!["ensure-base", "--json", "--image", image.as_str()];
        if let Some(cache) = cache {
            args.extend(["--cache", cache]);
        }
        args.extend_from_slice(extra);
        let mut cold_args = args.clone();
        cold_args.push("--force");
        let (cold, report) = timed(&project, &cold_args)?;
        if report["source"] != "built" {
            bail!("the cold run did not build: {report}");
        }
        let mut warm = Vec::with_capacity(warm_runs);
        let (mut keying, mut lookup) = (Vec::new(), Vec::new());
        for _ in 0..warm_runs {
            let (seconds, report) = timed(&project, &args)?;
            if report["hit"] != true {
                bail!("a warm run was not a hit: {report}");
            }
            warm.push(seconds);
            keying.push(report["hash_seconds"].as_f64().unwrap_or(0.0));
            lookup.push(report["lookup_seconds"].as_f64().unwrap_or(0.0));
        }
        let warm_median = median(&mut warm);
        let (keying, lookup) = (median(&mut keying), median(&mut lookup));
        eprintln!(
            "{label:>32}: cold {:7.1} ms   warm median {:5.1} ms (key {:.1}, lookup {:.1}; min {:.1}, max {:.1}, {warm_runs} runs)   warm/cold {:.2} %",
            cold * 1000.0,
            warm_median * 1000.0,
            keying * 1000.0,
            lookup * 1000.0,
            warm[0] * 1000.0,
            warm[warm.len() - 1] * 1000.0,
            100.0 * warm_median / cold
        );
        results.push(json!({
            "records": label,
            "cold_ms": cold * 1000.0,
            "warm_median_ms": warm_median * 1000.0,
            "warm_min_ms": warm[0] * 1000.0,
            "warm_max_ms": warm[warm.len() - 1] * 1000.0,
            "warm_runs": warm_runs,
            "warm_over_cold": warm_median / cold,
            "key_ms": keying * 1000.0,
            "lookup_ms": lookup * 1000.0,
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "ensure_base": results }))?
    );
    Ok(())
}
