//! `cachectl bench` on the Python example (local OCI layout, its `from` the
//! Debian python image in a registry): every scenario and phase is
//! reported, the cold runs really built the base and the warm ones did not,
//! and the bench tag is removed afterwards.

use std::path::Path;
use std::process::Command;

use cachectl_e2e::bins::workspace_binary;
use cachectl_e2e::python::push_python_image;
use cachectl_e2e::registry::RegistryServer;

fn copy_example(to: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-app");
    let status = Command::new("cp")
        .arg("-R")
        .arg(&example)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success());
    let _ = std::fs::remove_dir_all(to.join("build"));
}

#[test]
fn bench_reports_every_scenario_and_phase_with_real_cold_builds() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("python-app");
    copy_example(&project);
    let plot = work.path().join("bench.svg");
    let output = Command::new(workspace_binary("cachectl"))
        .args(["bench", "--runs", "1", "--json", "--from", &from, "--plot"])
        .arg(&plot)
        .current_dir(&project)
        .env("CACHECTL_CACHE_DIR", work.path().join("records"))
        .env_remove("CACHECTL_CACHE")
        .output()
        .expect("cachectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");

    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cold", "app-change", "no-change"]);
    for scenario in scenarios {
        for phase in ["hash", "lookup", "build", "push", "layer", "total"] {
            let spread = &scenario["phases"][phase];
            for stat in ["median", "min", "max"] {
                let value = spread[stat].as_f64().unwrap_or(-1.0);
                assert!(
                    value >= 0.0,
                    "{} {phase} {stat}: {spread}",
                    scenario["name"]
                );
            }
        }
        assert_eq!(scenario["runs"].as_array().unwrap().len(), 1);
    }
    let run = |i: usize| &scenarios[i]["runs"][0];
    // Cold: the builder ran (unpacking the image and pip take seconds).
    assert_eq!(
        (run(0)["built"].as_bool(), run(0)["base_hit"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(scenarios[0]["phases"]["build"]["median"].as_f64().unwrap() > 1.0);
    // Warm: no build; the app change uploads its layer, no change uploads nothing.
    for i in [1, 2] {
        assert_eq!(
            (run(i)["built"].as_bool(), run(i)["base_hit"].as_bool()),
            (Some(false), Some(true))
        );
    }
    assert!(run(1)["bytes"].as_u64().unwrap() > 0);
    assert_eq!(run(1)["app_reused"], false);
    assert_eq!(
        (run(2)["bytes"].as_u64(), run(2)["app_reused"].as_bool()),
        (Some(0), Some(true))
    );
    let saving = scenarios[2]["saving_percent"].as_f64().unwrap();
    assert!(saving > 50.0, "no change saved only {saving} %");

    let svg = std::fs::read_to_string(&plot).expect("--plot wrote the SVG");
    assert!(
        svg.starts_with("<svg") && svg.contains("phase-build"),
        "{svg}"
    );
    // The bench tag is gone from the layout; the user's own files untouched.
    let index = std::fs::read_to_string(project.join("build/oci/index.json")).unwrap();
    assert!(!index.contains("cachectl-bench"), "{index}");
    assert!(!project.join("app/.cachectl-bench").exists());
}
