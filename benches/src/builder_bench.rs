//! `builder-bench`: wall time of `cachectl ensure-base` building the same
//! Python base (a `from` image in a loopback registry, a `pip install
//! --target` of a local wheel) with the native builder, whose install step
//! runs inside the image, and with buildah (`bud` in chroot isolation, vfs
//! storage, as it runs in this sandbox), each cold (nothing unpacked or
//! pulled yet: a fresh cache folder or buildah store) and as a rebuild
//! after a requirements change (caches warm). The reference is buildah in
//! the same run; the result is the ratio native / buildah and the medians.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin builder-bench -- [RUNS]
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::buildah::{borrowed, counting_buildah};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::python::{HELLO_WHEEL, push_python_image, write_hello_wheel};
use cachectl_e2e::registry::RegistryServer;
use serde_json::json;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Writes the project: a wheel with a console script, its requirements,
/// and both recipes.
fn project(image: &str, from: &str, builder: &str) -> anyhow::Result<Project> {
    let project = Project::new();
    write_hello_wheel(project.path());
    project.write("requirements.txt", "hello==1.0\n");
    let pip = "pip install --no-index --no-cache-dir --disable-pip-version-check";
    project.write(
        "Dockerfile.base",
        &format!(
            "FROM {from}\nCOPY wheels /tmp/wheels\nRUN {pip} --target /opt/deps /tmp/{HELLO_WHEEL}\n"
        ),
    );
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "{builder}"
from = "{from}"
install = "{pip} --target {{out}}/opt/deps {HELLO_WHEEL}"
dockerfile = "Dockerfile.base"
platform = "linux/amd64"
"#
        ),
    );
    Ok(project)
}

/// One `ensure-base` that must build; its wall seconds.
fn build(project: &Project, env: &[(&str, &str)]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let run = project.cachectl(&["ensure-base", "--json"], env);
    let seconds = started.elapsed().as_secs_f64();
    if run.code != 0 {
        bail!("cachectl failed:\n{}", run.stderr);
    }
    if run.json()["source"] != "built" {
        bail!("expected a build: {}", run.stdout);
    }
    Ok(seconds)
}

fn main() -> anyhow::Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("RUNS must be a whole number")?,
        None => 3,
    };
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let mut results = serde_json::Map::new();
    for builder in ["native", "buildah"] {
        let (mut cold, mut rebuild) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let image = format!("{}/bench/{builder}-{run}", registry.host());
            let project = project(&image, &from, builder)?;
            let scratch = tempfile::tempdir()?;
            let env_owned = counting_buildah(&project.marker(), scratch.path());
            let env = borrowed(&env_owned);
            cold.push(build(&project, &env)?);
            project.append("requirements.txt", "# changed\n");
            rebuild.push(build(&project, &env)?);
        }
        let (cold, rebuild) = (median(&mut cold), median(&mut rebuild));
        eprintln!(
            "{builder:>8}: cold {:7.0} ms   rebuild {:7.0} ms   (median of {runs})",
            cold * 1000.0,
            rebuild * 1000.0
        );
        results.insert(
            builder.to_owned(),
            json!({ "cold_ms": cold * 1000.0, "rebuild_ms": rebuild * 1000.0, "runs": runs }),
        );
    }
    let ratio = |what: &str| {
        results["native"][what].as_f64().unwrap_or(0.0)
            / results["buildah"][what].as_f64().unwrap_or(1.0)
    };
    let (cold_ratio, rebuild_ratio) = (ratio("cold_ms"), ratio("rebuild_ms"));
    results.insert("native_over_buildah_cold".into(), json!(cold_ratio));
    results.insert("native_over_buildah_rebuild".into(), json!(rebuild_ratio));
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "builders": results }))?
    );
    Ok(())
}
