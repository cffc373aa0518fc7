//! `package-bench`: what a one-package bump costs with package layers,
//! against three references in the same run:
//!
//! - the same base as one layer (`package_layers = "off"`), rebuilt whole;
//! - `buildah bud --layers` of the equivalent Dockerfile with its layer
//!   cache warm (the `pip install` layer is invalidated by the bump);
//! - the plan's floor: the bytes of the changed package's wheel.
//!
//! And the cold build with package layers against `buildah bud` (nothing
//! built yet, the `from` image already pulled), in each run. Two projects,
//! the package-layer tests', pushed to a loopback docker-registry:
//!
//! - pip: 18 PyPI wheels from `$CACHECTL_TEST_DEPS/pypi-wheels` (Flask,
//!   Pillow, zope.*, requests, setuptools, ...), installed by the Debian
//!   image's pip inside the image; the bump is `six` 1.16.0 → 1.17.0;
//! - npm: `tests/npm/plan` (express, semver, esbuild: 75 packages
//!   installed), `npm ci` by npm 10 in the Debian Node image from the
//!   tarballs of `$CACHECTL_TEST_DEPS/npm-packages` served by nginx; the
//!   bump is `semver` 7.6.3 → 7.7.1.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin package-bench -- [RUNS]
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::bins::deps_dir;
use cachectl_e2e::buildah::{borrowed, counting_buildah};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::nginx::Nginx;
use cachectl_e2e::python::{
    PYPI_REQUIREMENTS as REQUIREMENTS, push_node_npm_image, push_python_image, write_npm_plan,
    write_pypi_wheels,
};
use cachectl_e2e::registry::RegistryServer;
use serde_json::json;

const PIP: &str = "pip install --no-index --no-cache-dir --disable-pip-version-check";

/// A pip project building its base with `builder` (`native` with package
/// layers `on` or `off`, or `buildah`) into `image`.
fn pip_project(
    image: &str,
    from: &str,
    builder: &str,
    package_layers: &str,
) -> anyhow::Result<Project> {
    let project = Project::new();
    write_pypi_wheels(project.path());
    project.write("requirements.txt", REQUIREMENTS);
    project.write(
        "Dockerfile.base",
        &format!(
            "FROM {from}\nCOPY requirements.txt /tmp/requirements.txt\nCOPY wheels /tmp/wheels\n\
             RUN {PIP} --find-links /tmp/wheels --target /opt/deps -r /tmp/requirements.txt\n"
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
install = "{PIP} --find-links wheels --target {{out}}/opt/deps -r requirements.txt"
package_layers = "{package_layers}"
dockerfile = "Dockerfile.base"
platform = "linux/amd64"
"#
        ),
    );
    Ok(project)
}

const NPM_CI: &str = "npm ci --omit=dev --no-audit --no-fund";

/// An npm project building its base with `builder` into `image`,
/// installing from the registry at `npm_registry`.
fn npm_project(
    image: &str,
    from: &str,
    builder: &str,
    package_layers: &str,
    npm_registry: &str,
) -> anyhow::Result<Project> {
    let project = Project::new();
    write_npm_plan(&project, "plan");
    project.write(".npmrc", &format!("registry={npm_registry}/\n"));
    project.write(
        "Dockerfile.base",
        &format!(
            "FROM {from}\nWORKDIR /app\nCOPY package.json package-lock.json .npmrc ./\nRUN {NPM_CI}\n"
        ),
    );
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{image}"
manifests = ["package.json", "package-lock.json", ".npmrc"]
builder = "{builder}"
from = "{from}"
install = "mkdir -p {{out}}/app && cp package.json package-lock.json .npmrc {{out}}/app/ && cd {{out}}/app && {NPM_CI}"
package_layers = "{package_layers}"
dockerfile = "Dockerfile.base"
platform = "linux/amd64"
"#
        ),
    );
    Ok(project)
}

/// One `ensure-base` that must build: its wall seconds and bytes pushed.
fn build(project: &Project, env: &[(&str, &str)]) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let run = project.cachectl(&["ensure-base", "--json"], env);
    let seconds = started.elapsed().as_secs_f64();
    if run.code != 0 {
        bail!("cachectl failed:\n{}", run.stderr);
    }
    // `PACKAGE_BENCH_VERBOSE=1 RUST_LOG=cache_cli=debug`: where the time goes.
    if std::env::var_os("PACKAGE_BENCH_VERBOSE").is_some() {
        eprintln!("{}", run.stderr);
    }
    let report = run.json();
    if report["source"] != "built" {
        bail!("expected a build: {}", run.stdout);
    }
    Ok((seconds, report["pushed_bytes"].as_u64().unwrap_or(0)))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// A project to measure: how to make it and bump it, and the floor.
struct Scenario<'a> {
    name: &'a str,
    make: &'a dyn Fn(&str, &str, &str) -> anyhow::Result<Project>,
    bump: &'a dyn Fn(&Project) -> anyhow::Result<()>,
    floor: u64,
}

/// Cold build and bump of `scenario` with each variant, `runs` times.
fn measure(
    registry: &RegistryServer,
    scenario: &Scenario<'_>,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let variants = [
        ("layers", "native", "on"),
        ("one_layer", "native", "off"),
        ("buildah", "buildah", "off"),
    ];
    let mut results = serde_json::Map::new();
    let mut cold = vec![Vec::new(); variants.len()];
    let mut bump = vec![Vec::new(); variants.len()];
    let mut bump_bytes = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        // In turn, starting from another variant each run, so that a busy
        // moment of the machine hits every variant alike.
        for step in 0..variants.len() {
            let at = (step + run) % variants.len();
            let (name, builder, layers) = variants[at];
            let image = format!("{}/bench/{}-{name}-{run}", registry.host(), scenario.name);
            let project = (scenario.make)(&image, builder, layers)?;
            let scratch = tempfile::tempdir()?;
            let env_owned = counting_buildah(&project.marker(), scratch.path());
            let env = borrowed(&env_owned);
            let (seconds, _) = build(&project, &env)?;
            cold[at].push(seconds);
            (scenario.bump)(&project)?;
            let (seconds, bytes) = build(&project, &env)?;
            bump[at].push(seconds);
            bump_bytes[at].push(bytes as f64);
            eprintln!(
                "{} run {run}: {name:>9}: cold {:6.1} s, bump {:6.1} s, {bytes} bytes pushed",
                scenario.name, cold[at][run], seconds
            );
        }
    }
    for (at, (name, ..)) in variants.iter().enumerate() {
        results.insert(
            (*name).to_owned(),
            json!({
                "cold_median_s": median(&cold[at]),
                "cold_worst_s": worst(&cold[at]),
                "cold_s": cold[at],
                "bump_median_s": median(&bump[at]),
                "bump_s": bump[at],
                "bump_pushed_bytes_median": median(&bump_bytes[at]),
            }),
        );
    }
    let beats_buildah_cold = cold[0]
        .iter()
        .zip(&cold[2])
        .filter(|(layers, buildah)| layers < buildah)
        .count();
    results.insert("runs".into(), json!(runs));
    results.insert("floor_bytes".into(), json!(scenario.floor));
    results.insert(
        "cold_runs_faster_than_buildah".into(),
        json!(beats_buildah_cold),
    );
    results.insert(
        "bump_over_one_layer_rebuild".into(),
        json!(median(&bump[0]) / median(&bump[1])),
    );
    results.insert(
        "bump_over_buildah_layers".into(),
        json!(median(&bump[0]) / median(&bump[2])),
    );
    results.insert(
        "bump_over_cold".into(),
        json!(median(&bump[0]) / median(&cold[0])),
    );
    Ok(serde_json::Value::Object(results))
}

fn main() -> anyhow::Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("RUNS must be a whole number")?,
        None => 5,
    };
    // Built before the clock starts (the harness builds the workspace's
    // binaries on first use).
    cachectl_e2e::bins::workspace_binary("cachectl");
    let registry = RegistryServer::start();
    let python = push_python_image(&registry);
    let node = push_node_npm_image(&registry);
    let npm_registry = Nginx::serve_files(&deps_dir().join("npm-packages"), 1);
    let npm_url = npm_registry.base_url();
    let pip = Scenario {
        name: "pip",
        make: &|image, builder, layers| pip_project(image, &python, builder, layers),
        bump: &|project| {
            project.write(
                "requirements.txt",
                &REQUIREMENTS.replace("six==1.16.0", "six==1.17.0"),
            );
            Ok(())
        },
        floor: std::fs::metadata(deps_dir().join("pypi-wheels/six-1.17.0-py2.py3-none-any.whl"))
            .context("the six 1.17.0 wheel (run scripts/install-test-deps)")?
            .len(),
    };
    let npm = Scenario {
        name: "npm",
        make: &|image, builder, layers| npm_project(image, &node, builder, layers, &npm_url),
        bump: &|project| {
            write_npm_plan(project, "bumped");
            Ok(())
        },
        floor: std::fs::metadata(deps_dir().join("npm-packages/semver/-/semver-7.7.1.tgz"))
            .context("the semver 7.7.1 tarball (run scripts/install-test-deps)")?
            .len(),
    };
    let packages = measure(&registry, &pip, runs)?;
    let npm = measure(&registry, &npm, runs)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "packages": packages, "npm": npm }))?
    );
    Ok(())
}
