//! `layer-bench`: pushing a 50 MB / 5,000-file app on the busybox base to a
//! local registry, `cachectl layer` against the daemonless alternative a
//! user would script here, `umoci repack` + `skopeo copy`, in the same run;
//! and `cachectl layer` for an unchanged app (HEAD requests only).
//!
//! Then what app layers by change cost and save, the figures the default
//! compaction bound (8 deltas, 25 % of the app's bytes) was chosen from:
//! a one-file deploy on the stack against the same deploy as one full
//! layer, and what a node with nothing cached pays to pull and unpack
//! (`skopeo copy` + `umoci unpack`) the app as 1 layer, 1 + 8 and 1 + 32.
//!
//! Each push goes to a new repository of the same registry, so both tools
//! upload the app layer every time (and may mount or copy the base layer).
//! The reference's `umoci unpack` of the base is done once, untimed.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin layer-bench -- [RUNS]
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::random_bytes;
use cachectl_e2e::registry::{RegistryServer, push_busybox};
use serde_json::json;

const FILES: usize = 5_000;
const TOTAL_BYTES: usize = 50 * 1024 * 1024;

fn generate_app(root: &Path) -> anyhow::Result<()> {
    let per_file = TOTAL_BYTES / FILES;
    for i in 0..FILES {
        let folder = root.join(format!("pkg{:02}/mod{:02}", i % 50, (i / 50) % 20));
        std::fs::create_dir_all(&folder)?;
        // Half random, half text: about what source and assets compress to.
        let mut content = random_bytes(per_file / 2, i as u64 + 1);
        content.extend(format!("line {i}\n").repeat(per_file / 2 / 8).into_bytes());
        std::fs::write(folder.join(format!("file{i}.py")), content)?;
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("RUNS must be a whole number")?,
        None => 5,
    };
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "library/busybox", "1");
    let project = Project::new();
    generate_app(&project.path().join("app"))?;

    // The reference's setup, untimed: the base unpacked once.
    let work = tempfile::tempdir()?;
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{base}"),
            &format!("oci:{}:base", layout.display()),
        ],
    )?;
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:base", layout.display()),
            &bundle.display().to_string(),
        ],
    )?;

    let (mut ours, mut reference, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    let mut layer_bytes = 0u64;
    for i in 0..runs {
        let image = format!("{}/bench/ours{i}:app", registry.host());
        let started = Instant::now();
        let report = project.layer(&base, &image, &[], &[]);
        ours.push(started.elapsed().as_secs_f64());
        if report.code != 0 {
            bail!("cachectl layer failed: {}", report.stderr);
        }
        layer_bytes = report.json()["layer_bytes"].as_u64().unwrap_or(0);

        let started = Instant::now();
        let app_dest = bundle.join("rootfs/app");
        let _ = std::fs::remove_dir_all(&app_dest);
        run(
            "cp",
            &[
                "-a",
                &project.path().join("app").display().to_string(),
                &app_dest.display().to_string(),
            ],
        )?;
        let tag = format!("{}:run{i}", layout.display());
        run(
            "umoci",
            &["repack", "--image", &tag, &bundle.display().to_string()],
        )?;
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{tag}"),
                &format!("docker://{}/bench/ref{i}:app", registry.host()),
            ],
        )?;
        reference.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let again = project.layer(&base, &image, &[], &[]);
        unchanged.push(started.elapsed().as_secs_f64());
        if again.json()["uploaded_bytes"] != 0 {
            bail!("an unchanged app uploaded bytes: {}", again.stdout);
        }
    }
    let stacks = stack_costs(&registry, &base, &project, runs)?;
    let (ours_median, reference_median, unchanged_median) = (
        median(&mut ours),
        median(&mut reference),
        median(&mut unchanged),
    );
    eprintln!(
        "app of {FILES} files / {} MB (layer {:.1} MB gzip): cachectl layer {:.0} ms, umoci repack + skopeo copy {:.0} ms, ratio {:.2}; unchanged app {:.0} ms (median of {runs})",
        TOTAL_BYTES / 1_000_000,
        layer_bytes as f64 / 1e6,
        ours_median * 1000.0,
        reference_median * 1000.0,
        ours_median / reference_median,
        unchanged_median * 1000.0,
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "files": FILES,
            "bytes": TOTAL_BYTES,
            "layer_bytes": layer_bytes,
            "runs": runs,
            "cachectl_layer_ms": ours_median * 1000.0,
            "umoci_repack_skopeo_copy_ms": reference_median * 1000.0,
            "ratio": ours_median / reference_median,
            "unchanged_app_ms": unchanged_median * 1000.0,
            "stacks": stacks,
        }))?
    );
    Ok(())
}

/// `cachectl layer` of `project`'s app with `env`; its wall seconds and
/// report.
fn deploy(
    project: &Project,
    base: &str,
    image: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let report = project.layer(base, image, &[], env);
    let seconds = started.elapsed().as_secs_f64();
    if report.code != 0 {
        bail!("cachectl layer failed: {}", report.stderr);
    }
    Ok((seconds, report.json()))
}

/// Seconds for a node with nothing cached to pull `image` and unpack it.
fn cold_pull(image: &str) -> anyhow::Result<f64> {
    let work = tempfile::tempdir()?;
    let layout = work.path().join("layout");
    let started = Instant::now();
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("oci:{}:pulled", layout.display()),
        ],
    )?;
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:pulled", layout.display()),
            &work.path().join("bundle").display().to_string(),
        ],
    )?;
    Ok(started.elapsed().as_secs_f64())
}

/// The costs of a stack of app layers: one-file deploys on it against the
/// same deploys as one layer, and cold pulls as it grows.
fn stack_costs(
    registry: &RegistryServer,
    base: &str,
    project: &Project,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let stacked = format!("{}/bench/stack:app", registry.host());
    let whole = format!("{}/bench/whole:app", registry.host());
    let unbounded = [
        ("CACHECTL_APP_MAX_DELTAS", "64"),
        ("CACHECTL_APP_MAX_DELTA_SHARE", "1"),
    ];
    let one = [("CACHECTL_APP_LAYERS", "one")];
    deploy(project, base, &stacked, &unbounded)?;
    deploy(project, base, &whole, &one)?;
    let (mut delta_s, mut whole_s, mut pulls) = (Vec::new(), Vec::new(), Vec::new());
    let (mut delta_bytes, mut whole_bytes) = (0, 0);
    let edited = project.path().join("app/pkg00/mod00/file0.py");
    for deltas in 1..=32 {
        std::fs::write(&edited, format!("deploy {deltas}\n"))?;
        let (seconds, report) = deploy(project, base, &stacked, &unbounded)?;
        delta_s.push(seconds);
        delta_bytes = report["uploaded_bytes"].as_u64().unwrap_or(0);
        let (seconds, report) = deploy(project, base, &whole, &one)?;
        whole_s.push(seconds);
        whole_bytes = report["uploaded_bytes"].as_u64().unwrap_or(0);
        if [1, 8, 32].contains(&deltas) {
            let (mut one_layer, mut on_stack) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                one_layer.push(cold_pull(&whole)?);
                on_stack.push(cold_pull(&stacked)?);
            }
            let (one_layer, on_stack) = (median(&mut one_layer), median(&mut on_stack));
            eprintln!(
                "cold pull and unpack: 1 + {deltas} app layers {:.0} ms, 1 app layer {:.0} ms ({:.2}x)",
                on_stack * 1000.0,
                one_layer * 1000.0,
                on_stack / one_layer
            );
            pulls.push(json!({
                "deltas": deltas,
                "stack_ms": on_stack * 1000.0,
                "one_layer_ms": one_layer * 1000.0,
                "ratio": on_stack / one_layer,
            }));
        }
    }
    let (delta_ms, whole_ms) = (median(&mut delta_s) * 1000.0, median(&mut whole_s) * 1000.0);
    eprintln!(
        "a one-file deploy: on the stack {delta_ms:.0} ms, {delta_bytes} bytes; as one layer {whole_ms:.0} ms, {whole_bytes} bytes (median of 32)"
    );
    Ok(json!({
        "one_file_deploy_ms": delta_ms,
        "one_file_deploy_bytes": delta_bytes,
        "one_layer_deploy_ms": whole_ms,
        "one_layer_deploy_bytes": whole_bytes,
        "cold_pulls": pulls,
    }))
}
