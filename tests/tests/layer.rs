//! `cachectl layer`: the app folder as one reproducible layer on a base,
//! pushed to a real registry with no daemon, checked with skopeo and umoci.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::random_bytes;
use cachectl_e2e::file_tree::{differences, tree};
use cachectl_e2e::registry::{RegistryServer, push_busybox, skopeo_inspect, unpack};

fn app_project() -> Project {
    let project = Project::new();
    add_app(&project);
    project
}

/// The app folder: sources, an executable, files `.dockerignore` leaves
/// out, and links inside and outside the context.
fn add_app(project: &Project) {
    project.write("app/main.py", "print('hello')\n");
    project.write("app/web/views.py", "VIEWS = []\n");
    project.write("app/run.sh", "#!/bin/sh\nexec python main.py\n");
    project.write("app/secret.txt", "do not ship\n");
    project.write("app/debug.log", "noise\n");
    project.write("app/.dockerignore", "secret.txt\n*.log\n");
    project.write("outside", "host file\n");
    let app = project.path().join("app");
    std::fs::set_permissions(app.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", app.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../outside", app.join("outside-link")).unwrap();
}

/// The app project with `requirements.txt` and a `cachectl.toml` whose
/// native base (`from`, if any) and app images are the ones given.
fn build_project(base_image: &str, from: Option<&str>, app_image: &str) -> Project {
    let project = Project::native(base_image, from);
    add_app(&project);
    project.append(
        "cachectl.toml",
        &format!(
            r#"[app]
image = "{app_image}"
context = "app"
cmd = ["python", "main.py"]
"#
        ),
    );
    project
}

/// The app settings every test here gives.
const APP_FLAGS: &[&str] = &[
    "--cmd",
    "python",
    "--cmd",
    "main.py",
    "--env",
    "MODE=prod",
    "--workdir",
    "/app",
];

fn layer(project: &Project, base: &str, image: &str) -> serde_json::Value {
    project.layer(base, image, APP_FLAGS, &[]).success().json()
}

#[test]
fn the_app_layer_is_reproducible_and_an_unchanged_app_uploads_nothing() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/base:app", registry.host());
    let project = app_project();

    let first = layer(&project, &base, &image);
    assert!(first["uploaded_bytes"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["reused"], false);
    let uploads = registry.blob_upload_requests();
    assert!(uploads > 0, "the registry log shows no upload at all");
    let second = layer(&project, &base, &image);
    assert_eq!(
        registry.blob_upload_requests(),
        uploads,
        "the registry logged a blob upload for an unchanged app"
    );
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["uploaded_bytes"], 0, "{second}");
    assert_eq!(
        second["reused"], true,
        "an unchanged app was packed again: {second}"
    );

    // Without records (a fresh cache folder) the app is packed again, to the
    // same digest, and still uploads nothing.
    let fresh = tempfile::tempdir().unwrap();
    let repacked = project
        .layer(
            &base,
            &image,
            APP_FLAGS,
            &[("CACHECTL_CACHE_DIR", fresh.path().to_str().unwrap())],
        )
        .success()
        .json();
    assert_eq!(
        (repacked["reused"].as_bool(), repacked["digest"].clone()),
        (Some(false), first["digest"].clone())
    );
    assert_eq!(repacked["uploaded_bytes"], 0, "{repacked}");

    // New mtimes, same content: same image.
    for file in ["app/main.py", "app/web/views.py", "app/run.sh"] {
        let path = project.path().join(file);
        let content = std::fs::read(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, content).unwrap();
    }
    std::fs::set_permissions(
        project.path().join("app/run.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    assert_eq!(layer(&project, &base, &image)["digest"], first["digest"]);

    // Another checkout in another folder: the same image.
    let elsewhere = app_project();
    assert_eq!(layer(&elsewhere, &base, &image)["digest"], first["digest"]);

    // One byte changed: a new image.
    project.write("app/main.py", "print('hello!')\n");
    let changed = layer(&project, &base, &image);
    assert_ne!(changed["digest"], first["digest"]);
    assert_eq!(changed["reused"], false);
}

#[test]
fn the_pushed_image_is_what_skopeo_and_umoci_see() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "library/busybox", "1");
    let image = format!("{}/acme/web:pr-1", registry.host());
    let project = app_project();
    // Names past the ustar limits, non-ASCII and non-UTF-8: carried by PAX.
    let long = format!("{}/{}.py", "d".repeat(120), "f".repeat(250));
    project.write(&format!("app/{long}"), "LONG = 1\n");
    project.write("app/café/naïve.py", "ACCENT = 1\n");
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(project.path().join("app").join(latin1), "latin-1 name\n").unwrap();
    let report = layer(&project, &base, &image);
    assert_eq!(
        report["mounted"], 1,
        "the base layer comes by cross-repository mount: {report}"
    );

    let pushed = format!("docker://{image}");
    let base_config = skopeo_inspect(&format!("docker://{base}"), true);
    let config = skopeo_inspect(&pushed, true);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 2);
    assert_eq!(diff_ids[0], base_config["rootfs"]["diff_ids"][0]);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["python", "main.py"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "MODE=prod")
    );
    let base_digest = skopeo_inspect(&format!("docker://{base}"), false)["Digest"].clone();
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.base.digest"],
        base_digest
    );
    assert_eq!(
        config["history"].as_array().unwrap().len(),
        base_config["history"].as_array().map_or(0, Vec::len) + 1
    );

    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&pushed, scratch.path()).join("rootfs");
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base's files are there"
    );
    let mode = |path: &str| {
        std::fs::symlink_metadata(rootfs.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/main.py")).unwrap(),
        "print('hello')\n"
    );
    assert_eq!(mode("app/main.py"), 0o644);
    assert_eq!(mode("app/run.sh"), 0o755);
    assert!(rootfs.join("app/web/views.py").is_file());
    assert!(
        !rootfs.join("app/secret.txt").exists(),
        ".dockerignore was not applied"
    );
    assert!(
        !rootfs.join("app/debug.log").exists(),
        ".dockerignore was not applied"
    );
    // Links stay links; their targets were not read into the image.
    assert_eq!(
        std::fs::read_link(rootfs.join("app/passwd"))
            .unwrap()
            .to_str(),
        Some("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("app/outside-link"))
            .unwrap()
            .to_str(),
        Some("../outside")
    );
    assert!(!rootfs.join("outside").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app").join(&long)).unwrap(),
        "LONG = 1\n"
    );
    assert!(rootfs.join("app/café/naïve.py").is_file());
    assert_eq!(
        std::fs::read(rootfs.join("app").join(latin1)).unwrap(),
        b"latin-1 name\n"
    );
}

#[test]
fn build_runs_ensure_base_then_layer_and_the_second_build_uploads_nothing() {
    let registry = RegistryServer::start();
    let busybox = push_busybox(&registry, "library/busybox", "1");
    let project = build_project(
        &format!("{}/acme/web-base", registry.host()),
        Some(&busybox),
        &format!("{}/acme/web:main", registry.host()),
    );
    let outputs = project.path().join("github-output");
    let env = [("GITHUB_OUTPUT", outputs.to_str().unwrap())];
    let first = project
        .cachectl(&["build", "--json"], &env)
        .success()
        .json();
    assert_eq!(first["base"]["source"], "built");
    assert!(first["app"]["uploaded_bytes"].as_u64().unwrap() > 0);
    let second = project
        .cachectl(&["build", "--json"], &env)
        .success()
        .json();
    assert_eq!(second["base"]["hit"], true);
    assert_eq!(second["app"]["digest"], first["app"]["digest"]);
    assert_eq!(second["app"]["uploaded_bytes"], 0);
    assert_eq!(second["app"]["reused"], true);
    assert_eq!(project.builds(), 1);

    let app = format!("docker://{}/acme/web:main", registry.host());
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&app, scratch.path()).join("rootfs");
    assert!(
        rootfs.join("opt/deps/requirements.txt").is_file(),
        "base layer missing"
    );
    assert!(rootfs.join("app/main.py").is_file(), "app layer missing");
    let text = std::fs::read_to_string(&outputs).unwrap();
    assert!(
        text.contains(&format!(
            "image={}",
            first["app"]["reference"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("cache-hit=true"), "{text}");
}

#[test]
fn a_zstd_layer_goes_on_an_oci_base_and_is_refused_on_a_docker_base() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "library/busybox", "1");
    let project = app_project();
    let image = format!("{}/acme/web:zstd", registry.host());
    let report = project
        .layer(&base, &image, &["--compression", "zstd"], &[])
        .success()
        .json();
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(manifest["layers"][1]["digest"], report["layer_digest"]);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("image");
    let copied = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dir.display()))
        .status()
        .unwrap();
    assert!(copied.success(), "skopeo refused the zstd image");
    let hex = report["layer_digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {}/{hex} | tar -t", dir.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .any(|l| l == "app/main.py")
    );

    let docker_base = format!("{}/library/busybox-v2s2:1", registry.host());
    let converted = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ])
        .arg(format!("docker://{base}"))
        .arg(format!("docker://{docker_base}"))
        .status()
        .unwrap();
    assert!(converted.success());
    let refused = project.layer(&docker_base, &image, &["--compression", "zstd"], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Docker schema-2"),
        "{}",
        refused.stderr
    );
    let gzip = project
        .layer(&docker_base, &image, &[], &[])
        .success()
        .json();
    assert!(gzip["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn platform_all_puts_the_app_on_every_image_of_an_index_base() {
    let registry = RegistryServer::start();
    let base = cachectl_e2e::registry::push_multi_platform(&registry, "library/multi", "1");
    let project = app_project();
    let image = format!("{}/acme/multi-app:1", registry.host());
    let report = project
        .layer(&base, &image, &["--platform", "all"], &[])
        .success()
        .json();
    let raw = |reference: &str| -> serde_json::Value {
        let output = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let index = raw(&image);
    let base_index = raw(&base);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    for (ours, theirs) in manifests
        .iter()
        .zip(base_index["manifests"].as_array().unwrap())
    {
        assert_eq!(ours["platform"], theirs["platform"]);
        let name = image.rsplit_once(':').unwrap().0;
        let manifest = raw(&format!("{name}@{}", ours["digest"].as_str().unwrap()));
        let base_manifest = raw(&format!(
            "{}@{}",
            base.rsplit_once(':').unwrap().0,
            theirs["digest"].as_str().unwrap()
        ));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(
            layers.len(),
            base_manifest["layers"].as_array().unwrap().len() + 1
        );
        assert_eq!(
            layers[0], base_manifest["layers"][0],
            "the platform's own base layer"
        );
        assert_eq!(
            layers.last().unwrap()["digest"],
            report["layer_digest"],
            "the same app layer"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let arm = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--override-arch", "arm64"])
        .arg(format!("docker://{image}"))
        .arg(format!(
            "oci:{}:arm",
            scratch.path().join("layout").display()
        ))
        .status()
        .unwrap();
    assert!(arm.success());
}

#[test]
fn build_works_on_local_oci_layouts_and_layer_moves_images_between_layout_and_registry() {
    let project = build_project("oci:./build/oci:web-base", None, "oci:./build/oci:web");
    let first = project.cachectl(&["build", "--json"], &[]).success().json();
    assert_eq!(first["base"]["source"], "built");
    // Printed like ensure-base prints its base: relative to the project.
    assert_eq!(first["app"]["reference"], "oci:build/oci:web");
    let image = format!("oci:{}:web", project.path().join("build/oci").display());
    let second = project.cachectl(&["build", "--json"], &[]).success().json();
    assert_eq!(second["base"]["hit"], true);
    assert_eq!(second["app"]["digest"], first["app"]["digest"]);
    assert_eq!(second["app"]["reused"], true, "{second}");
    assert_eq!(project.builds(), 1);

    let inspected = skopeo_inspect(&image, false);
    assert_eq!(inspected["Digest"], first["app"]["digest"]);
    let config = skopeo_inspect(&image, true);
    assert_eq!(
        config["config"]["Labels"]["dev.cachectl.base-key"],
        first["base"]["key"]
    );
    // No host path from the app step: the layout's folder is not part of the image.
    let app_step = [
        config["config"]["Labels"].to_string(),
        config["history"][1].to_string(),
    ];
    for text in app_step {
        assert!(!text.contains(project.path().to_str().unwrap()), "{text}");
    }
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&image, scratch.path()).join("rootfs");
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());
    assert!(rootfs.join("app/main.py").is_file());

    // The layout's base, layered into a registry: its layers are uploaded
    // from the layout's files; then the registry image back into another layout.
    let registry = RegistryServer::start();
    let base = first["base"]["reference"].as_str().unwrap().to_owned();
    let pushed = layer(&project, &base, &format!("{}/acme/web:1", registry.host()));
    assert!(pushed["uploaded_bytes"].as_u64().unwrap() > 0, "{pushed}");
    let scratch = tempfile::tempdir().unwrap();
    let remote = format!("docker://{}/acme/web:1", registry.host());
    let rootfs = unpack(&remote, scratch.path()).join("rootfs");
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());
    assert!(rootfs.join("app/main.py").is_file());

    let other = project.path().join("other-oci");
    let copied = layer(
        &project,
        pushed["reference"].as_str().unwrap(),
        &format!("oci:{}:again", other.display()),
    );
    // The base layers come from the registry; the app layer, identical to
    // the one already in the base, is there by then.
    assert!(copied["uploaded_bytes"].as_u64().unwrap() > 0, "{copied}");
    assert_eq!(copied["base"], pushed["reference"]);
    let again = format!("oci:{}:again", other.display());
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&again, scratch.path()).join("rootfs");
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());
}

#[test]
fn a_one_gib_app_streams_through_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "library/busybox", "1");
    let image = format!("{}/acme/big:1", registry.host());
    let project = Project::new();
    project.write("app/main.py", "print('big')\n");
    // A sparse file: 1 GiB to read, hash and compress, no disk to fill.
    std::fs::File::create(project.path().join("app/big.bin"))
        .unwrap()
        .set_len(GIB)
        .unwrap();
    let args = [
        "layer",
        "--json",
        "--base",
        &base,
        "--app-image",
        &image,
        "--context",
        "app",
    ];
    let (run, peak) = project.cachectl_peak_rss(&args, &[]);
    let report = run.success().json();
    eprintln!("cachectl layer of a 1 GiB app: peak RSS {} MiB", peak >> 20);
    assert!(
        peak < 100 * 1024 * 1024,
        "cachectl peaked at {} MiB for a 1 GiB app",
        peak >> 20
    );

    // The layer in the registry holds the whole file.
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
        ])
        .arg(format!("dir:{}", copy.path().display()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let layer_digest = report["layer_digest"].as_str().unwrap();
    let layer = copy.path().join(layer_digest.trim_start_matches("sha256:"));
    let gzip = flate2::read::GzDecoder::new(std::fs::File::open(layer).unwrap());
    let mut archive = tar::Archive::new(gzip);
    let sizes: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.path().unwrap().display().to_string(),
                entry.header().size().unwrap(),
            )
        })
        .collect();
    assert!(
        sizes.contains(&("app/big.bin".to_owned(), GIB)),
        "{sizes:?}"
    );
}

/// A registry that needs no credentials is asked `GET /v2/` once per run,
/// not before every request (oci-client probes before each operation once
/// it holds credentials for a registry, which doubled a deploy's round
/// trips), and the layer it pushes is the same either way.
#[test]
fn an_open_registry_is_probed_once_per_run() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/base:app", registry.host());
    let project = app_project();
    let first = layer(&project, &base, &image);
    assert!(first["uploaded_bytes"].as_u64().unwrap() > 0, "{first}");

    project.write("app/main.py", "print('hello again')\n");
    let probes = registry.version_probes();
    let uploads = registry.blob_upload_requests();
    let changed = layer(&project, &base, &image);
    assert_ne!(changed["digest"], first["digest"]);
    assert!(
        registry.blob_upload_requests() > uploads,
        "the changed app uploaded nothing"
    );
    assert_eq!(
        registry.version_probes() - probes,
        1,
        "a run that read manifests, checked blobs, uploaded and tagged probed /v2/ more than once"
    );
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/main.py")).unwrap(),
        "print('hello again')\n"
    );
}

/// Once an app has been pushed onto a base from this machine, the next
/// changed app asks the registry for no blob: the base's layers are known
/// to be there (the registry took a manifest naming them) and the new layer
/// and config are small and new, so they are uploaded at once. A fresh
/// runner (no cachectl folder) still asks first.
#[test]
fn a_changed_app_on_a_base_pushed_from_here_before_asks_for_no_blob() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/app:live", registry.host());
    let project = app_project();
    layer(&project, &base, &image);

    project.write("app/main.py", "print('changed')\n");
    let (checks, uploads) = (registry.blob_checks(), registry.blob_upload_requests());
    let changed = layer(&project, &base, &image);
    assert_eq!(
        registry.blob_checks() - checks,
        0,
        "a changed app on a known base asked for blobs: {changed}"
    );
    assert_eq!(
        registry.blob_upload_requests() - uploads,
        2,
        "the layer and the config: {changed}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/main.py")).unwrap(),
        "print('changed')\n"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base's layer is missing"
    );

    project.write("app/main.py", "print('on a fresh runner')\n");
    let fresh = tempfile::tempdir().unwrap();
    let checks = registry.blob_checks();
    project
        .layer(
            &base,
            &image,
            APP_FLAGS,
            &[("CACHECTL_CACHE_DIR", fresh.path().to_str().unwrap())],
        )
        .success();
    assert!(
        registry.blob_checks() > checks,
        "a fresh runner uploaded without asking what the registry has"
    );
}

/// A base layer the target repository no longer holds (deleted after the
/// last push from here) does not break the next deploy: the manifest pushed
/// on the mark's word is refused, the layers are checked and copied, and
/// the push goes through with a complete image.
#[test]
fn base_layers_deleted_from_the_target_are_copied_again() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/app:live", registry.host());
    let project = app_project();
    layer(&project, &base, &image);
    let base_layers = skopeo_inspect(&format!("docker://{base}"), false)["Layers"].clone();
    let base_layers: Vec<&str> = base_layers
        .as_array()
        .unwrap()
        .iter()
        .map(|digest| digest.as_str().unwrap())
        .collect();
    assert!(!base_layers.is_empty());
    for digest in &base_layers {
        registry.delete_blob("acme/app", digest);
    }

    project.write("app/main.py", "print('after the cleanup')\n");
    let changed = layer(&project, &base, &image);
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs");
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base's layer is missing: {changed}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/main.py")).unwrap(),
        "print('after the cleanup')\n"
    );

    // Known again: the next deploy asks for nothing.
    project.write("app/main.py", "print('and after')\n");
    let checks = registry.blob_checks();
    layer(&project, &base, &image);
    assert_eq!(registry.blob_checks() - checks, 0);
}

/// A cache server that cannot be reached does not fail a deploy: the app
/// is layered and pushed, and what could not be done comes back in the
/// report's `warnings` (and on stderr), for CI to read.
#[test]
fn an_unreachable_cache_is_a_warning_in_the_report_not_a_failure() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/base:app", registry.host());
    let project = app_project();
    // Nothing listens on port 9 of the loopback address.
    let run = project.layer(
        &base,
        &image,
        APP_FLAGS,
        &[("CACHECTL_CACHE", "http://127.0.0.1:9")],
    );
    let report = run.success().json();
    assert!(report["uploaded_bytes"].as_u64().unwrap() > 0, "{report}");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {report}"))
        .iter()
        .filter_map(|warning| warning.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("packing the app without the cache")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("could not record the app image")),
        "{warnings:?}"
    );
    let quiet = layer(&project, &base, &image);
    assert_eq!(quiet["warnings"], serde_json::json!([]), "{quiet}");
}

/// A base whose manifest lists a layer without a digest is refused with
/// the image named, before anything is copied or pushed: never an empty
/// digest asked of the store.
#[test]
fn a_base_layer_without_a_digest_is_refused_naming_the_image() {
    use cachectl_e2e::data::oci_digest;
    let project = app_project();
    let layout = project.path().join("base-oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = oci_digest(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        (digest, bytes.len())
    };
    let (config, config_size) = put(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#,
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":32}}]}}"#
    );
    let (manifest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"base"}}}}]}}"#
        ),
    )
    .unwrap();
    let base = format!("oci:{}:base", layout.display());
    let target = format!("oci:{}:app", project.path().join("out").display());
    let refused = project.layer(&base, &target, APP_FLAGS, &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("base-oci") && refused.stderr.contains("not a valid manifest"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("digest"), "{}", refused.stderr);
}

#[test]
fn a_layout_inside_the_context_is_made_before_the_context_is_hashed() {
    // The layout `cachectl init` names lives in the project, which is the
    // context: the second deploy of the same app is recognised, with the
    // layout's folder created by the first.
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let project = app_project();
    let deploy = || {
        project
            .cachectl(
                &[
                    "layer",
                    "--json",
                    "--base",
                    &base,
                    "--app-image",
                    "oci:./app/build/oci:web",
                    "--context",
                    "app",
                    "--exclude",
                    "build/oci",
                ],
                &[],
            )
            .success()
            .json()
    };
    let first = deploy();
    assert!(project.path().join("app/build/oci/index.json").is_file());
    let second = deploy();
    assert_eq!(second["digest"], first["digest"], "{second}");
    assert_eq!(second["reused"], true, "{second}");
}

#[test]
fn an_app_layered_by_change_pushes_what_changed_and_equals_the_one_layer_build() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/web:app", registry.host());
    let project = Project::new();
    // 30 MB: binary media that rarely changes, and 200 small sources.
    for n in 0..30 {
        let bytes = random_bytes(1_000_000, n);
        std::fs::create_dir_all(project.path().join("app/media")).unwrap();
        std::fs::write(project.path().join(format!("app/media/{n:02}.bin")), bytes).unwrap();
    }
    for n in 0..200 {
        project.write(
            &format!("app/web/page_{n:03}.py"),
            &format!("# page {n}\n{}", "x = 1\n".repeat(340)),
        );
    }
    let deploy = |extra: &[&str]| {
        let mut flags = vec!["--app-layers", "changes"];
        flags.extend_from_slice(extra);
        project.layer(&base, &image, &flags, &[]).success().json()
    };
    let first = deploy(&[]);
    assert_eq!(first["app_layers"]["layers"], 1, "{first}");

    // One 2 KB file changed: one more layer, holding it.
    project.write(
        "app/web/page_007.py",
        &format!("# page 7, edited\n{}", "y = 2\n".repeat(340)),
    );
    let stored = registry.stored_blob_bytes();
    let changed = deploy(&[]);
    assert_eq!(changed["app_layers"]["layers"], 2, "{changed}");
    assert_eq!(changed["app_layers"]["delta_files"], 1, "{changed}");
    // Measured on the registry's side: the bytes its storage gained.
    let received = registry.stored_blob_bytes() - stored;
    assert!(
        received <= 256 * 1024,
        "the registry received {received} bytes for a 2 KB change"
    );
    assert!(
        stored > 30_000_000,
        "the first deploy stored {stored} bytes"
    );
    eprintln!("a 2 KB change of a 30 MB app: the registry received {received} bytes");

    // A deleted file, then a file changed back: each one more layer.
    std::fs::remove_file(project.path().join("app/web/page_100.py")).unwrap();
    deploy(&[]);
    project.write(
        "app/web/page_007.py",
        &format!("# page 7\n{}", "x = 1\n".repeat(340)),
    );
    let back = deploy(&[]);
    assert_eq!(back["app_layers"]["layers"], 4, "{back}");

    // The merged filesystem is the one-layer build of the same tree.
    let scratch = tempfile::tempdir().unwrap();
    for folder in ["stacked", "single"] {
        std::fs::create_dir_all(scratch.path().join(folder)).unwrap();
    }
    let stacked = unpack(
        &format!("docker://{}", back["reference"].as_str().unwrap()),
        &scratch.path().join("stacked"),
    );
    let single_image = format!("{}/acme/web-one:app", registry.host());
    let single = project
        .layer(&base, &single_image, &[], &[])
        .success()
        .json();
    let single = unpack(
        &format!("docker://{}", single["reference"].as_str().unwrap()),
        &scratch.path().join("single"),
    );
    let (a, b) = (
        tree(&stacked.join("rootfs/app")),
        tree(&single.join("rootfs/app")),
    );
    assert!(!a.contains_key("web/page_100.py"));
    assert_eq!(a["web/page_007.py"].2, b["web/page_007.py"].2);
    assert_eq!(differences(&a, &b), Vec::<String>::new());

    // Successive one-file deploys: at most 8 deltas, then the deltas are
    // one, on the full layer, which is not pushed again.
    let mut compacted = 0;
    for n in 0..12 {
        project.write("app/web/page_050.py", &format!("# deploy {n}\n"));
        let stored = registry.stored_blob_bytes();
        let report = deploy(&[]);
        let layers = report["app_layers"]["layers"].as_u64().unwrap();
        assert!(layers <= 9, "{report}");
        if report["app_layers"]["compacted"] == true {
            compacted += 1;
            assert_eq!(layers, 2, "{report}");
            assert_eq!(report["app_layers"]["compaction"], "deltas", "{report}");
            let received = registry.stored_blob_bytes() - stored;
            assert!(
                received <= 256 * 1024,
                "a compaction stored {received} bytes"
            );
        }
    }
    assert!(compacted >= 1, "the stack was never compacted");

    // The last deploy's layers deleted from the registry (a cleanup): the
    // manifest naming them is refused, and the app goes up as one full
    // layer instead, complete.
    project.write("app/web/page_051.py", "# after the cleanup\n");
    let on_top = deploy(&[]);
    let digests = skopeo_inspect(&format!("docker://{image}"), false)["Layers"].clone();
    for digest in digests.as_array().unwrap().iter().skip(1) {
        registry.delete_blob("acme/web", digest.as_str().unwrap());
    }
    assert!(
        on_top["app_layers"]["layers"].as_u64().unwrap() >= 2,
        "{on_top}"
    );
    project.write("app/web/page_052.py", "# and after\n");
    let rebuilt = deploy(&[]);
    assert_eq!(rebuilt["app_layers"]["layers"], 1, "{rebuilt}");
    let scratch = tempfile::tempdir().unwrap();
    let app = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs/app");
    assert_eq!(
        std::fs::read_to_string(app.join("web/page_052.py")).unwrap(),
        "# and after\n"
    );
    // Complete: the same paths as the stack that was there (both files
    // were there already).
    assert_eq!(tree(&app).len(), tree(&stacked.join("rootfs/app")).len());
}

#[test]
fn twenty_one_file_deploys_to_a_layout_compact_where_the_bound_says_and_each_equals_the_one_layer_build()
 {
    // The default (by change) with the bound a user sets in the
    // environment, deployed to an OCI layout; every image unpacked with
    // umoci and compared with the one-layer build of the same tree.
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let base_layers = skopeo_inspect(&format!("docker://{base}"), false)["Layers"]
        .as_array()
        .unwrap()
        .len();
    let project = Project::new();
    let mut seed = 0;
    let mut noise = |len: usize| {
        seed += 1;
        random_bytes(len, seed)
    };
    std::fs::create_dir_all(project.path().join("app/static")).unwrap();
    for n in 0..6 {
        let path = project.path().join(format!("app/static/{n}.png"));
        std::fs::write(path, noise(400_000)).unwrap();
    }
    for n in 0..40 {
        project.write(&format!("app/web/view_{n:02}.py"), &"x = 1\n".repeat(340));
    }
    // A bound that makes no sense is refused, naming the setting.
    for (flags, env) in [
        (vec![], vec![("CACHECTL_APP_MAX_DELTA_SHARE", "1.5")]),
        (vec!["--app-max-deltas", "500"], vec![]),
        (vec!["--app-layers", "some"], vec![]),
    ] {
        let refused = project.layer(&base, "oci:./out/stacked:web", &flags, &env);
        assert_eq!(refused.code, 2, "{flags:?} {env:?}: {}", refused.stderr);
        assert!(refused.stderr.contains("app."), "{}", refused.stderr);
    }
    let env = vec![("CACHECTL_APP_MAX_DELTAS", "4")];
    let scratch = tempfile::tempdir().unwrap();
    for n in 0..20 {
        // One file each time: a source edited, a binary replaced, a file
        // added, a file deleted, a mode changed (each tree a new one: a
        // tree deployed before is that image again, tagged).
        match n % 5 {
            0 => project.write("app/web/view_07.py", &format!("x = {n}\n")),
            1 => std::fs::write(project.path().join("app/static/2.png"), noise(2_000)).unwrap(),
            2 => project.write(&format!("app/web/new_{n}.py"), "NEW = True\n"),
            3 => std::fs::remove_file(project.path().join(format!("app/web/view_{n:02}.py")))
                .unwrap(),
            _ => {
                let script = project.path().join("app/web/view_09.py");
                let mode = if n % 2 == 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(script, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        // The last deploy: a bound so low that the changes since the full
        // layer pass it, and the app is one layer again.
        let last_env = [("CACHECTL_APP_MAX_DELTA_SHARE", "0.000001")];
        let env: &[(&str, &str)] = if n == 19 { &last_env } else { &env };
        let run = project
            .layer(&base, "oci:./out/stacked:web", &[], env)
            .success();
        let stacked = run.json();
        let layers = stacked["app_layers"]["layers"]
            .as_u64()
            .unwrap_or_else(|| panic!("deploy {n}: {stacked}"));
        // Deploy 0 is one full layer and 4 deltas go on it; the fifth change
        // makes the deltas one: 1, 2, 3, 4, 5, then 2, 3, 4, 5, 2, ...
        let (expected, compaction) = match n {
            0..5 => (n + 1, None),
            19 => (1, Some("app")),
            _ => ((n - 5) % 4 + 2, ((n - 5) % 4 == 0).then_some("deltas")),
        };
        assert_eq!(layers, expected as u64, "deploy {n}: {stacked}");
        assert_eq!(
            stacked["app_layers"]["compaction"],
            serde_json::json!(compaction),
            "deploy {n}: {stacked}"
        );
        if n == 6 {
            assert!(
                run.stderr
                    .contains("app layers: 3, a layer of 1 changed file (2.0 kB) pushed"),
                "{}",
                run.stderr
            );
        }
        let in_layout = skopeo_inspect(
            &format!("oci:{}:web", project.path().join("out/stacked").display()),
            false,
        );
        assert_eq!(
            in_layout["Layers"].as_array().unwrap().len(),
            base_layers + layers as usize,
            "deploy {n}"
        );
        project
            .layer(&base, "oci:./out/single:web", &["--app-layers", "one"], &[])
            .success();
        let folder = scratch.path().join(n.to_string());
        let trees: Vec<_> = ["stacked", "single"]
            .iter()
            .map(|which| {
                let layout = project.path().join("out").join(which);
                std::fs::create_dir_all(folder.join(which)).unwrap();
                let bundle = unpack(
                    &format!("oci:{}:web", layout.display()),
                    &folder.join(which),
                );
                tree(&bundle.join("rootfs/app"))
            })
            .collect();
        assert_eq!(
            differences(&trees[0], &trees[1]),
            Vec::<String>::new(),
            "deploy {n}"
        );
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

#[test]
fn a_fresh_runner_finds_the_last_deploy_on_the_cache_server_and_pushes_only_the_change() {
    // 12,000 files: the app's tree is larger than a record on the server
    // may be (1 MiB), so it is stored as a blob beside the record.
    let server = cachectl_e2e::CacheServer::local();
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/web:app", registry.host());
    let project = Project::new();
    for n in 0..12_000 {
        project.write(
            &format!("app/vendor/module_{:02}/component_file_{n:05}.js", n % 60),
            &format!("export const value_{n} = {n};\n"),
        );
    }
    let cache = server.base_url();
    let runner = |name: &str| project.path().join(name).display().to_string();
    let (first_runner, second_runner) = (runner("runner-1"), runner("runner-2"));
    let deploy = |runner: &str| {
        project
            .layer(
                &base,
                &image,
                &["--exclude", "runner-*"],
                &[("CACHECTL_CACHE", &cache), ("CACHECTL_CACHE_DIR", runner)],
            )
            .success()
            .json()
    };
    let first = deploy(&first_runner);
    assert_eq!(first["app_layers"]["layers"], 1, "{first}");

    project.write(
        "app/vendor/module_07/component_file_00007.js",
        "export const value_7 = 'seven';\n",
    );
    let stored = registry.stored_blob_bytes();
    let fresh = deploy(&second_runner);
    assert_eq!(fresh["app_layers"]["layers"], 2, "{fresh}");
    assert_eq!(fresh["app_layers"]["delta_files"], 1, "{fresh}");
    let received = registry.stored_blob_bytes() - stored;
    assert!(
        received <= 256 * 1024,
        "a fresh runner's one-file change stored {received} bytes"
    );

    let scratch = tempfile::tempdir().unwrap();
    let app = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs/app");
    assert_eq!(
        std::fs::read_to_string(app.join("vendor/module_07/component_file_00007.js")).unwrap(),
        "export const value_7 = 'seven';\n"
    );
    assert_eq!(
        std::fs::read_dir(app.join("vendor/module_07"))
            .unwrap()
            .count(),
        200
    );
}

#[test]
fn the_same_last_deploy_and_the_same_change_give_the_same_image_on_two_machines() {
    // Two checkouts of the same app on two runners (each its own cachectl
    // folder), deploying the same history to two repositories: the same
    // layers, the same config, the same manifest digest each time.
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let (one, two) = (app_project(), app_project());
    let images = [
        format!("{}/acme/one:app", registry.host()),
        format!("{}/acme/two:app", registry.host()),
    ];
    let mut digests = Vec::new();
    for change in ["print('one')\n", "print('two')\n"] {
        let reports: Vec<_> = [&one, &two]
            .iter()
            .zip(&images)
            .map(|(project, image)| {
                project.write("app/web/views.py", change);
                project.layer(&base, image, APP_FLAGS, &[]).success().json()
            })
            .collect();
        assert_eq!(reports[0]["digest"], reports[1]["digest"], "{reports:?}");
        digests.push(reports[0]["digest"].clone());
    }
    let stacked = skopeo_inspect(&format!("docker://{}", images[1]), false);
    assert_eq!(stacked["Layers"].as_array().unwrap().len(), 3, "{stacked}");
    assert_ne!(digests[0], digests[1]);
}
