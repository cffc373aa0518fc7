//! A project whose base and app images live in a registry, driven as users
//! drive it: `--app-image REG/repo:tag` and the other `[app]` flags, the
//! same settings as `CACHECTL_*` variables, and `cachectl bench`, which
//! passes its app image to every run. Regression: `--app-image` once shared
//! clap's id with the global `--image`, so `build --app-image REG/repo:tag`
//! failed with "base.image must be a repository without tag" and
//! `cachectl bench` failed on every registry project.

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::{RegistryServer, push_busybox, skopeo_inspect};

/// A native-builder project on `from`, its base in `REG/acme/base`, and
/// an app folder; no `[app]` section: the app image comes from flags or
/// variables.
fn registry_project(registry: &RegistryServer, from: &str) -> Project {
    let project = Project::native(&format!("{}/acme/base", registry.host()), Some(from));
    project.write("app/main.py", "print('hello')\n");
    project
}

/// `cachectl build --json --app-image APP_IMAGE --context app` with `env`;
/// its report.
fn build_app(project: &Project, app_image: &str, env: &[(&str, &str)]) -> serde_json::Value {
    project
        .cachectl(
            &[
                "build",
                "--json",
                "--app-image",
                app_image,
                "--context",
                "app",
            ],
            env,
        )
        .success()
        .json()
}

#[test]
fn build_with_app_image_flags_pushes_the_app_where_they_say() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = registry_project(&registry, &from);
    let app_image = format!("{}/acme/web:v1", registry.host());
    let run = project
        .cachectl(
            &[
                "build",
                "--json",
                "--app-image",
                &app_image,
                "--context",
                "app",
                "--dest",
                "/srv/app",
                "--cmd",
                "python3",
                "--cmd=main.py",
                "--env",
                "MODE=prod",
                "--label",
                "team=web",
                "--workdir",
                "/srv/app",
                "--user",
                "1000",
            ],
            &[],
        )
        .success();
    let report = run.json();
    assert_eq!(report["app"]["image"], app_image.as_str(), "{report}");
    let base_reference = report["base"]["reference"].as_str().unwrap();
    assert!(
        base_reference.starts_with(&format!("{}/acme/base@sha256:", registry.host())),
        "the base went elsewhere: {base_reference}"
    );
    let config = skopeo_inspect(&format!("docker://{app_image}"), true);
    let settings = &config["config"];
    assert_eq!(settings["Cmd"], serde_json::json!(["python3", "main.py"]));
    assert_eq!(settings["WorkingDir"], "/srv/app");
    assert_eq!(settings["User"], "1000");
    assert_eq!(settings["Labels"]["team"], "web");
    assert!(
        settings["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "MODE=prod"),
        "{settings}"
    );
    let pushed = skopeo_inspect(&format!("docker://{app_image}"), false);
    assert_eq!(
        pushed["Digest"].as_str(),
        report["app"]["digest"].as_str(),
        "the tag v1 names another manifest"
    );
}

#[test]
fn build_takes_the_app_and_base_settings_from_cachectl_variables() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = registry_project(&registry, &from);
    // The variables override the file: another base repository, too.
    let base = format!("{}/acme/other-base", registry.host());
    let app_image = format!("{}/acme/web:from-env", registry.host());
    let report = project
        .cachectl(
            &["build", "--json"],
            &[
                ("CACHECTL_BASE_IMAGE", base.as_str()),
                ("CACHECTL_APP_IMAGE", app_image.as_str()),
                ("CACHECTL_APP_CONTEXT", "app"),
                ("CACHECTL_APP_DEST", "/opt/web"),
                ("CACHECTL_APP_WORKDIR", "/opt/web"),
                ("CACHECTL_APP_COMPRESSION", "zstd"),
            ],
        )
        .success()
        .json();
    assert_eq!(report["app"]["image"], app_image.as_str());
    assert!(
        report["base"]["reference"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}@sha256:")),
        "{report}"
    );
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{app_image}"))
        .output()
        .expect("skopeo runs");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("a manifest");
    let top = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("layers");
    assert_eq!(
        top["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{manifest}"
    );
    let config = skopeo_inspect(&format!("docker://{app_image}"), true);
    assert_eq!(config["config"]["WorkingDir"], "/opt/web");
}

#[test]
fn bench_runs_on_a_project_whose_images_are_in_a_registry() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = registry_project(&registry, &from);
    let app_image = format!("{}/acme/web:main", registry.host());
    let report = project
        .cachectl(
            &[
                "bench",
                "--runs",
                "1",
                "--json",
                "--app-image",
                &app_image,
                "--context",
                "app",
                "--env",
                "MODE=bench",
            ],
            &[],
        )
        .success()
        .json();
    assert_eq!(
        report["image"],
        format!("{}/acme/web:cachectl-bench", registry.host()).as_str()
    );
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 3, "{report}");
    let run = |i: usize| &scenarios[i]["runs"][0];
    assert_eq!(run(0)["built"], true, "the cold run did not build");
    assert_eq!(run(1)["base_hit"], true);
    assert_eq!(run(2)["app_reused"], true, "no change was not recognised");
    // The bench tag is removed from the registry afterwards.
    let tags = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/acme/web", registry.host()))
        .output()
        .expect("skopeo runs");
    let tags = String::from_utf8_lossy(&tags.stdout);
    assert!(!tags.contains("cachectl-bench"), "{tags}");
}

/// The base's manifest and config, pulled by digest, are kept under
/// `CACHECTL_CACHE_DIR`/`digests`, each file named by the sha256 of its
/// content; a kept file changed on disk is never used: the next deploy
/// fetches it again, pushes the right image and keeps it intact again.
#[test]
fn manifests_and_configs_are_kept_by_digest_and_a_changed_one_is_never_used() {
    use sha2::Digest as _;
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = registry_project(&registry, &from);
    let cache_dir = project.path().join("runner-cache");
    let env = [("CACHECTL_CACHE_DIR", cache_dir.to_str().unwrap())];
    let app_image = format!("{}/acme/web:v1", registry.host());
    let build = |project: &Project| build_app(project, &app_image, &env);
    let first = build(&project);
    let base_digest = first["base"]["digest"].as_str().unwrap().to_owned();
    let kept = || -> Vec<(String, Vec<u8>)> {
        std::fs::read_dir(cache_dir.join("digests"))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect()
    };
    let files = kept();
    assert!(
        files
            .iter()
            .any(|(name, _)| format!("sha256:{name}") == base_digest),
        "the base manifest {base_digest} is not kept: {:?}",
        files.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        assert_eq!(&format!("{:x}", sha2::Sha256::digest(bytes)), name);
        std::fs::write(
            cache_dir.join("digests").join(name),
            b"{\"tampered\": true}",
        )
        .unwrap();
    }
    project.write("app/main.py", "print('second deploy')\n");
    let second = build(&project);
    let config = skopeo_inspect(&format!("docker://{app_image}"), true);
    assert_eq!(
        second["app"]["digest"].as_str().unwrap(),
        skopeo_inspect(&format!("docker://{app_image}"), false)["Digest"]
            .as_str()
            .unwrap()
    );
    assert!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len() >= 2,
        "{config}"
    );
    // The base manifest, needed again, was fetched again and kept intact;
    // a file not needed again stays as it is, unused.
    let base_hex = base_digest.trim_start_matches("sha256:");
    let (_, bytes) = kept()
        .into_iter()
        .find(|(name, _)| name == base_hex)
        .unwrap();
    assert_eq!(format!("{:x}", sha2::Sha256::digest(&bytes)), base_hex);
}

/// A fresh runner (no cachectl folder) deploying an app onto a base that
/// exists reads the base's manifest once: the GET that resolves the base's
/// tag keeps it by digest, and the deploy does not ask for it again by
/// digest. The pushed image is complete.
#[test]
fn a_fresh_runner_reads_the_bases_manifest_once() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = registry_project(&registry, &from);
    let app_image = format!("{}/acme/web:v1", registry.host());
    let built = build_app(&project, &app_image, &[]);
    assert_eq!(built["base"]["source"], "built");

    project.write("app/main.py", "print('from a fresh runner')\n");
    let fresh = tempfile::tempdir().unwrap();
    let by_digest = "\"GET /v2/acme/base/manifests/sha256:";
    let before = registry.requests_containing(by_digest);
    let report = build_app(
        &project,
        &app_image,
        &[("CACHECTL_CACHE_DIR", fresh.path().to_str().unwrap())],
    );
    assert_eq!(report["base"]["hit"], true, "{report}");
    assert_eq!(
        registry.requests_containing(by_digest) - before,
        0,
        "the base's manifest was read again by digest: {report}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = cachectl_e2e::registry::unpack(&format!("docker://{app_image}"), scratch.path())
        .join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/main.py")).unwrap(),
        "print('from a fresh runner')\n"
    );
}
