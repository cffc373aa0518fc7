//! `layer-bench`: pushing a 50 MB / 5,000-file app on the busybox base to a
//! local registry, `cachectl layer` against the daemonless alternative a
//! user would script here, `umoci repack` + `skopeo copy`, in the same run;
//! and `cachectl layer` for an unchanged app (HEAD requests only).
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
        }))?
    );
    Ok(())
}
