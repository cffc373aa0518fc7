//! The examples in `examples/`, built as their READMEs say and run: each
//! is built by `cachectl build` into a registry, the image is started (as
//! its user, with its environment) and answers HTTP requests; `cachectl
//! init` on each lists the example's dependency files; and a second build
//! with only the app changed reuses the base.

use std::path::{Path, PathBuf};
use std::process::Command;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::process::free_port;
use cachectl_e2e::python::{push_node_image, push_python_image};
use cachectl_e2e::registry::RegistryServer;
use cachectl_e2e::run_image::RunningImage;

/// `examples/NAME` copied into a fresh project (without build output).
fn example(name: &str) -> Project {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let project = Project::new();
    let status = Command::new("cp")
        .arg("-R")
        .arg(source.join("."))
        .arg(project.path())
        .status()
        .expect("cp runs");
    assert!(status.success());
    for output in ["build", "dist", "target", "node_modules"] {
        let _ = std::fs::remove_dir_all(project.path().join(output));
    }
    project
}

/// Runs the example's `build.sh` (the compiled languages').
fn build_program(project: &Project) {
    let output = Command::new("./build.sh")
        .current_dir(project.path())
        // One target folder for every run of the Rust example.
        .env(
            "CARGO_TARGET_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/examples"),
        )
        .output()
        .expect("build.sh runs");
    assert!(
        output.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cachectl build` of `project` into `registry` as `examples/NAME:v1`
/// with `extra` flags; the app image's reference and the base's hit.
fn build(
    project: &Project,
    registry: &RegistryServer,
    name: &str,
    extra: &[&str],
) -> (String, bool) {
    let base = format!("{}/examples/{name}-base", registry.host());
    let app = format!("{}/examples/{name}:v1", registry.host());
    let mut args = vec!["build", "--json", "--image", &base, "--app-image", &app];
    args.extend_from_slice(extra);
    let report = project.cachectl(&args, &[]).success().json();
    (
        report["app"]["reference"].as_str().unwrap().to_owned(),
        report["base"]["hit"].as_bool().unwrap(),
    )
}

/// The manifests `hash --explain` lists after `cachectl init` in a copy of
/// the example without its configuration.
fn init_manifests(name: &str) -> Vec<String> {
    let project = example(name);
    std::fs::remove_file(project.path().join("cachectl.toml")).unwrap();
    project.cachectl(&["init"], &[]).success();
    let explain = project
        .cachectl(&["hash", "--explain", "--upstream", "pin", "--json"], &[])
        .success()
        .json();
    explain["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|input| input["kind"] == "manifest")
        .map(|input| input["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts the built image on a free port; `GET /` must contain `greeting`
/// and `GET /healthz` answer `ok`.
fn run_and_ask(reference: &str, greeting: &str) -> RunningImage {
    let port = free_port();
    let running = RunningImage::start(
        &format!("docker://{reference}"),
        &[("PORT", &port.to_string())],
        port,
    );
    let (status, body) = running.get("/");
    assert!(status.contains("200"), "{status}: {body}");
    assert!(body.contains(greeting), "{body}");
    let (status, body) = running.get("/healthz");
    assert!(
        status.contains("200") && body.trim() == "ok",
        "{status}: {body}"
    );
    running
}

#[test]
fn the_python_example_installs_its_wheels_in_the_python_image_and_serves() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let project = example("python-app");
    let (reference, hit) = build(&project, &registry, "python-app", &["--from", &from]);
    assert!(!hit);
    let running = run_and_ask(
        &reference,
        "hello from python-app (Bottle 0.13.2, Python 3.",
    );
    // The dependency is in the base, installed by the image's pip.
    assert!(running.rootfs().join("opt/deps/bottle.py").is_file());

    // A change to the app only: the base is reused.
    project.write(
        "app/app.py",
        &std::fs::read_to_string(project.path().join("app/app.py"))
            .unwrap()
            .replace("hello from", "hi from"),
    );
    let (reference, hit) = build(&project, &registry, "python-app", &["--from", &from]);
    assert!(hit);
    run_and_ask(&reference, "hi from python-app");
    assert_eq!(init_manifests("python-app"), ["requirements.txt"]);
}

#[test]
fn the_node_example_installs_its_locked_modules_and_serves_as_its_user() {
    let registry = RegistryServer::start();
    let from = push_node_image(&registry);
    let project = example("node-app");
    // The test image has node but not npm (npm is 150 MB more of Debian
    // packages): the install step runs on the host, as users may choose.
    let (reference, hit) = build(
        &project,
        &registry,
        "node-app",
        &["--from", &from, "--install-in", "host"],
    );
    assert!(!hit);
    let running = run_and_ask(&reference, "hello from node-app (Node v");
    assert!(
        running
            .rootfs()
            .join("app/node_modules/escape-html/index.js")
            .is_file()
    );
    assert_eq!(running.config["User"], "1000:1000");
    assert_eq!(
        init_manifests("node-app"),
        ["package-lock.json", "package.json"]
    );
}

#[test]
fn the_go_example_is_a_static_binary_on_a_runtime_base_and_serves_as_non_root() {
    let registry = RegistryServer::start();
    let project = example("go-service");
    build_program(&project);
    let (reference, hit) = build(&project, &registry, "go-service", &[]);
    assert!(!hit);
    let running = run_and_ask(&reference, "hello from go-service (go1.");
    assert!(
        running
            .rootfs()
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );
    assert_eq!(running.config["User"], "10001:10001");
    assert_eq!(init_manifests("go-service"), ["go.sum"]);
}

#[test]
fn the_rust_example_is_a_static_binary_on_a_runtime_base_and_serves_as_non_root() {
    let registry = RegistryServer::start();
    let project = example("rust-service");
    build_program(&project);
    let (reference, hit) = build(&project, &registry, "rust-service", &[]);
    assert!(!hit);
    let running = run_and_ask(&reference, "hello from hello-service, request ");
    assert_eq!(running.config["User"], "10001:10001");
    // A new build of the program alone reuses the base.
    let (_, hit) = build(&project, &registry, "rust-service", &[]);
    assert!(hit);
    assert_eq!(init_manifests("rust-service"), ["Cargo.lock"]);
}
