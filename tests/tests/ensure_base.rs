//! `cachectl ensure-base` end to end: the real binary against a real OCI
//! registry (docker-registry), a local OCI layout, and a real cache-server;
//! what it pushes is checked with skopeo and umoci.

use cachectl_e2e::buildah::{borrowed, counting_buildah};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::{RegistryServer, push_busybox, skopeo_inspect, unpack};
use cachectl_e2e::{Backend, CacheServer, S3Server, ServerOptions};

#[test]
fn layout_target_builds_once_then_hits_without_building() {
    let project = Project::native("oci:./build/oci:web-base", None);
    let first = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(
        (first["hit"].as_bool(), first["source"].as_str()),
        (Some(false), Some("built"))
    );
    assert_eq!(project.builds(), 1);

    let second = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(
        (second["hit"].as_bool(), second["source"].as_str()),
        (Some(true), Some("cache"))
    );
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(project.builds(), 1, "the hit ran the builder");

    let key = first["key"].as_str().unwrap();
    let reference = format!(
        "oci:{}/build/oci:base-{}",
        project.path().display(),
        &key[..16]
    );
    let inspected = skopeo_inspect(&reference, false);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(inspected["Digest"], first["digest"]);
    let config = skopeo_inspect(&reference, true);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(config["config"]["Labels"]["dev.cachectl.base-key"], key);
    // The moving tag from oci:DIR:NAME points at the same image.
    let moving = skopeo_inspect(
        &format!("oci:{}/build/oci:web-base", project.path().display()),
        false,
    );
    assert_eq!(moving["Digest"], first["digest"]);
}

#[test]
fn a_manifest_change_rebuilds_and_reverting_it_hits_again() {
    let project = Project::native("oci:./build/oci", None);
    let first = project.cachectl(&["ensure-base", "--json"], &[]).success();
    assert!(
        first.stderr.contains("no earlier base recorded"),
        "{}",
        first.stderr
    );
    let original = first.json();

    project.write("requirements.txt", "flask==3.1.0\nrequests==2.32.3\n");
    let explain = project.cachectl(&["hash", "--explain"], &[]).success();
    assert!(
        explain.stderr.contains("changed manifest requirements.txt"),
        "{}",
        explain.stderr
    );
    assert_ne!(explain.stdout.trim(), original["key"].as_str().unwrap());
    let changed = project.cachectl(&["ensure-base", "--json"], &[]).success();
    let changed_json = changed.json();
    assert_eq!(changed_json["hit"], false);
    assert_ne!(changed_json["key"], original["key"]);
    assert_eq!(
        changed_json["changed"][0]["input"], "manifest requirements.txt",
        "{changed_json}"
    );
    assert!(changed.stderr.contains("changed manifest requirements.txt"));
    assert_eq!(project.builds(), 2);

    // A forced rebuild of an unchanged base says so, not that no base was
    // ever recorded.
    let forced = project.cachectl(&["ensure-base", "--force"], &[]).success();
    assert!(
        forced
            .stderr
            .contains("--force: nothing changed since the last base"),
        "{}",
        forced.stderr
    );
    assert!(
        !forced.stderr.contains("no earlier base"),
        "{}",
        forced.stderr
    );
    assert_eq!(project.builds(), 3);

    project.write("requirements.txt", "flask==3.0.3\nrequests==2.32.3\n");
    let reverted = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(reverted["hit"], true);
    assert_eq!(reverted["digest"], original["digest"]);
    assert_eq!(project.builds(), 3);
}

#[test]
fn native_base_on_busybox_in_a_registry_is_what_skopeo_and_umoci_see() {
    let registry = RegistryServer::start();
    let busybox = push_busybox(&registry, "library/busybox", "1");
    let image = format!("{}/acme/web-base", registry.host());
    let project = Project::native(&image, Some(&busybox));

    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["hit"], false);
    let reference = built["reference"].as_str().unwrap();
    assert!(
        reference.starts_with(&format!("{image}@sha256:")),
        "{reference}"
    );

    let key16 = &built["key"].as_str().unwrap()[..16];
    let pushed = format!("docker://{image}:base-{key16}");
    let base = skopeo_inspect(&format!("docker://{busybox}"), false);
    let ours = skopeo_inspect(&pushed, false);
    assert_eq!(ours["Digest"], built["digest"]);
    let layers = ours["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], base["Layers"][0], "the base layer is busybox's");
    let base_config = skopeo_inspect(&format!("docker://{busybox}"), true);
    let config = skopeo_inspect(&pushed, true);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 2);
    assert_eq!(diff_ids[0], base_config["rootfs"]["diff_ids"][0]);
    assert_eq!(
        config["config"]["Cmd"][0], "/bin/sh",
        "the base config was kept"
    );

    let scratch = tempfile::tempdir().unwrap();
    let bundle = unpack(&pushed, scratch.path());
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/deps/requirements.txt")).unwrap(),
        "flask==3.0.3\nrequests==2.32.3\n"
    );

    let again = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(
        (again["hit"].as_bool(), again["digest"].clone()),
        (Some(true), built["digest"].clone())
    );
    assert_eq!(project.builds(), 1);
}

#[test]
fn cache_server_records_bases_and_its_outage_falls_back_to_the_registry_tag() {
    let registry = RegistryServer::start();
    let image = format!("{}/acme/api-base", registry.host());
    let project = Project::native(&image, None);
    let mut server = CacheServer::local();
    let cache = server.base_url();

    let built = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");
    let hit = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success()
        .json();
    assert_eq!(
        (hit["source"].as_str(), hit["digest"].clone()),
        (Some("cache"), built["digest"].clone())
    );

    // Both runs reported their timing to the deploy history.
    let listed = std::process::Command::new("curl")
        .args(["-fsS", &server.url("/v1/events")])
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["hit"].as_bool()),
        (Some("ensure-base"), Some(true))
    );
    assert_eq!(events[1]["hit"], false);
    assert_eq!(events[1]["key"], built["key"]);
    assert!(
        events[1]["phases"]["build"].as_f64().unwrap() > 0.0,
        "{}",
        events[1]
    );

    assert!(server.stop());
    let fallback = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success();
    let fallback_json = fallback.json();
    assert_eq!(fallback_json["source"], "registry");
    assert_eq!(fallback_json["digest"], built["digest"]);
    assert!(fallback.stderr.contains("warning"), "{}", fallback.stderr);
    assert_eq!(project.builds(), 1);

    let required = project.cachectl(&["ensure-base", "--cache", &cache, "--require-cache"], &[]);
    assert_eq!(required.code, 3, "{}", required.stderr);
    assert!(required.stderr.contains("cache"), "{}", required.stderr);
}

#[test]
fn an_action_cache_record_of_a_deleted_image_triggers_a_rebuild() {
    // The cache server here keeps its records on a real S3-compatible store.
    let s3 = S3Server::start();
    let server = CacheServer::start(Backend::s3(&s3, "records"), ServerOptions::default());
    let cache = server.base_url();
    let registry = RegistryServer::start();
    let image = format!("{}/acme/stale-base", registry.host());
    let project = Project::native(&image, None);
    let built = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success()
        .json();
    let digest = built["digest"].as_str().unwrap();

    let deleted = std::process::Command::new("curl")
        .args(["-fsS", "-X", "DELETE"])
        .arg(format!(
            "http://{}/v2/acme/stale-base/manifests/{digest}",
            registry.host()
        ))
        .status()
        .unwrap();
    assert!(deleted.success());

    let rebuilt = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success();
    let rebuilt_json = rebuilt.json();
    assert_eq!(rebuilt_json["source"], "built");
    assert!(
        rebuilt.stderr.contains("no longer exists"),
        "{}",
        rebuilt.stderr
    );
    assert!(
        rebuilt
            .stderr
            .contains("nothing changed since the last base, but it is not there"),
        "{}",
        rebuilt.stderr
    );
    assert_eq!(project.builds(), 2);
    let again = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success()
        .json();
    assert_eq!(again["source"], "cache");
}

#[test]
fn bad_configuration_exits_2_naming_the_field() {
    let project = Project::native("oci:./build/oci", None);
    let cases = [
        (
            "[base]\nimage = \"oci:./x\"\nmanifests = [\"requirements.txt\"]\nbuilder = 3\n",
            "builder",
        ),
        (
            "[base]\nimage = \"oci:./x\"\nmanifests = [\"requirements.txt\"]\nbuilder = \"make\"\n",
            "base.builder",
        ),
        (
            "[base]\nmanifests = [\"requirements.txt\"]\ninstall = \"true\"\n",
            "base.image",
        ),
        (
            "[base]\nimage = \"oci:./x\"\nmanifests = [\"package-lock.json\"]\ninstall = \"true\"\n",
            "package-lock.json",
        ),
        (
            "[base]\nimage = \"oci:./x\"\nmanfests = [\"requirements.txt\"]\n",
            "manfests",
        ),
    ];
    for (config, named) in cases {
        project.write("cachectl.toml", config);
        let run = project.cachectl(&["ensure-base"], &[]);
        assert_eq!(run.code, 2, "{config}\n{}", run.stderr);
        assert!(run.stderr.contains(named), "{config}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn a_failed_build_exits_1_with_its_last_lines_and_records_nothing() {
    let project = Project::native("oci:./build/oci", None);
    let failing = project.cachectl(
        &[
            "ensure-base",
            "--install",
            "echo resolving deps; echo boom: no such package >&2; exit 7",
        ],
        &[],
    );
    assert_eq!(failing.code, 1, "{}", failing.stderr);
    // Streamed once as it ran, not repeated by the error.
    assert_eq!(
        failing.stderr.matches("| boom: no such package").count(),
        1,
        "{}",
        failing.stderr
    );
    assert!(
        failing.stderr.contains("its output is above"),
        "{}",
        failing.stderr
    );
    assert!(failing.stdout.is_empty());
    let retried = project
        .cachectl(
            &[
                "ensure-base",
                "--json",
                "--install",
                "echo built >> builds.log && mkdir -p {out}/x",
            ],
            &[],
        )
        .success()
        .json();
    assert_eq!(retried["source"], "built");
}

#[test]
fn an_unreachable_registry_exits_3() {
    let project = Project::native("127.0.0.1:9/acme/nowhere", None);
    let run = project.cachectl(&["ensure-base"], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
}

#[test]
fn github_outputs_are_written() {
    let project = Project::native("oci:./build/oci", None);
    let outputs = project.path().join("github-output");
    let summary = project.path().join("summary.md");
    let env = [
        ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    let built = project.cachectl(&["ensure-base"], &env).success();
    project.cachectl(&["ensure-base"], &env).success();
    let text = std::fs::read_to_string(&outputs).unwrap();
    let reference = built.stdout.trim();
    assert!(
        text.contains(&format!("base-image={reference}\n")),
        "{text}"
    );
    assert!(
        text.contains("cache-hit=false\n") && text.contains("cache-hit=true\n"),
        "{text}"
    );
    assert!(text.contains("base-key="), "{text}");
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains(reference)
    );
}

#[test]
fn concurrent_jobs_on_a_new_key_build_once_and_agree() {
    let registry = RegistryServer::start();
    let image = format!("{}/acme/busy-base", registry.host());
    let project = Project::native(&image, None);
    // A slow install makes the two jobs overlap.
    let slow = format!(
        "echo built >> {} && sleep 2 && mkdir -p {{out}}/opt && cp requirements.txt {{out}}/opt/",
        project.marker().display()
    );
    let server = CacheServer::local();
    let cache = server.base_url();
    let runs: Vec<_> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    project.cachectl(
                        &[
                            "ensure-base",
                            "--json",
                            "--cache",
                            &cache,
                            "--install",
                            &slow,
                        ],
                        &[],
                    )
                })
            })
            .collect();
        jobs.into_iter().map(|job| job.join().unwrap()).collect()
    });
    let reports: Vec<_> = runs.into_iter().map(|run| run.success().json()).collect();
    assert_eq!(project.builds(), 1, "{reports:?}");
    assert!(
        reports.iter().all(|r| r["digest"] == reports[0]["digest"]),
        "{reports:?}"
    );
    assert_eq!(
        reports.iter().filter(|r| r["source"] == "built").count(),
        1,
        "{reports:?}"
    );
}

#[test]
fn buildah_base_with_a_run_step_is_built_once_and_checked_by_umoci() {
    let registry = RegistryServer::start();
    let busybox = push_busybox(&registry, "library/busybox", "1");
    let image = format!("{}/acme/buildah-base", registry.host());
    let project = Project::new();
    project.write("requirements.txt", "flask==3.0.3\n");
    project.write(
        "Dockerfile.base",
        &format!(
            "FROM {busybox}\nCOPY requirements.txt /opt/deps/requirements.txt\nRUN echo installed > /opt/deps/INSTALLED\n"
        ),
    );
    project.write(
        "cachectl.toml",
        &format!(
            "[base]\nimage = \"{image}\"\nmanifests = [\"requirements.txt\"]\nbuilder = \"buildah\"\ndockerfile = \"Dockerfile.base\"\nplatform = \"linux/amd64\"\n"
        ),
    );
    let scratch = tempfile::tempdir().unwrap();
    let env_owned = counting_buildah(&project.marker(), scratch.path());
    let env = borrowed(&env_owned);

    let built = project
        .cachectl(&["ensure-base", "--json"], &env)
        .success()
        .json();
    assert_eq!(built["source"], "built");
    assert_eq!(project.builds(), 1);
    let key16 = &built["key"].as_str().unwrap()[..16];
    let pushed = format!("docker://{image}:base-{key16}");
    let inspected = skopeo_inspect(&pushed, false);
    assert_eq!(inspected["Digest"], built["digest"]);
    let config = skopeo_inspect(&pushed, true);
    assert_eq!(
        config["config"]["Labels"]["dev.cachectl.base-key"],
        built["key"]
    );
    let layers = inspected["Layers"].as_array().unwrap().len();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers
    );

    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = unpack(&pushed, unpacked.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/deps/INSTALLED")).unwrap(),
        "installed\n"
    );
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());
    assert!(rootfs.join("bin/busybox").is_file());

    let hit = project
        .cachectl(&["ensure-base", "--json"], &env)
        .success()
        .json();
    assert_eq!(
        (hit["hit"].as_bool(), hit["digest"].clone()),
        (Some(true), built["digest"].clone())
    );
    assert_eq!(project.builds(), 1, "the hit ran buildah");
}

#[test]
fn credentials_come_from_the_docker_config_and_a_wrong_password_exits_3() {
    let registry = RegistryServer::start_with_htpasswd("ci", "s3cret-pass");
    let image = format!("{}/acme/private-base", registry.host());
    let project = Project::native(&image, None);
    let encode = |text: &str| {
        let output = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let docker_config = |password: &str| {
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host(),
            encode(&format!("ci:{password}"))
        )
    };

    project.write(".docker/config.json", &docker_config("wrong-pass"));
    let refused = project.cachectl(&["ensure-base"], &[]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refused the credentials"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("wrong-pass"),
        "the password reached the output"
    );

    project.write(".docker/config.json", &docker_config("s3cret-pass"));
    let refused_reads = registry.refused_manifest_reads();
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");
    // The run's first read goes out with the probe, before the registry is
    // known to need credentials: one refused anonymous read at most, then
    // every request with the credentials.
    assert!(
        registry.refused_manifest_reads() - refused_reads <= 1,
        "more than one anonymous manifest read in a run"
    );

    project.write(".docker/config.json", "{\"auths\": {}}");
    let flags = project
        .cachectl(
            &["ensure-base", "--json", "--registry-user", "ci"],
            &[("CACHECTL_REGISTRY_PASSWORD", "s3cret-pass")],
        )
        .success()
        .json();
    assert_eq!(
        (flags["hit"].as_bool(), flags["digest"].clone()),
        (Some(true), built["digest"].clone())
    );
}

#[test]
fn a_multi_platform_from_image_is_resolved_to_the_configured_platform() {
    let registry = RegistryServer::start();
    let multi = cachectl_e2e::registry::push_multi_platform(&registry, "library/multi", "1");
    let image = format!("{}/acme/arm-base", registry.host());
    let project = Project::native(&image, Some(&multi));
    let built = project
        .cachectl(&["ensure-base", "--json", "--platform", "linux/arm64"], &[])
        .success()
        .json();
    let key16 = &built["key"].as_str().unwrap()[..16];
    let pushed = format!("docker://{image}:base-{key16}");
    let config = skopeo_inspect(&pushed, true);
    assert_eq!(config["architecture"], "arm64");
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&pushed, scratch.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("platform")).unwrap(),
        "linux/arm64\n"
    );
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());
}

#[test]
fn a_cache_server_with_tokens_takes_cachectl_token_and_a_missing_one_is_a_warning() {
    let registry = RegistryServer::start();
    let image = format!("{}/acme/token-base", registry.host());
    let project = Project::native(&image, None);
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let token = server.create_token("write", "ci", &[]);
    let cache = server.base_url();
    let with_token = [("CACHECTL_CACHE_TOKEN", token.as_str())];

    let built = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &with_token)
        .success()
        .json();
    assert_eq!(built["source"], "built");
    let hit = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &with_token)
        .success();
    assert_eq!(hit.json()["source"], "cache");
    assert!(!hit.stderr.contains(&token), "the token was printed");

    // No token: the cache refuses, the run goes on from the registry tag.
    let without = project
        .cachectl(&["ensure-base", "--json", "--cache", &cache], &[])
        .success();
    assert_eq!(without.json()["source"], "registry");
    assert!(
        without.stderr.contains("CACHECTL_CACHE_TOKEN"),
        "{}",
        without.stderr
    );
    let required = project.cachectl(&["ensure-base", "--cache", &cache, "--require-cache"], &[]);
    assert_eq!(required.code, 3, "{}", required.stderr);
    assert_eq!(project.builds(), 1);
}

#[test]
fn a_folder_without_cachectl_toml_is_told_so_not_about_a_field() {
    let project = Project::new();
    for args in [
        &["ensure-base"][..],
        &["hash", "--explain"],
        &["build"],
        &["layer", "--base", "oci:./x"],
    ] {
        let run = project.cachectl(args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("there is no cachectl.toml in")
                && run.stderr.contains("`cachectl init` writes one"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(": missing"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // The flags alone still do: the message is only for a missing file.
    project.write("requirements.txt", "flask==3.0.3\n");
    let flags = project.cachectl(
        &[
            "hash",
            "--image",
            "oci:./oci",
            "--manifest",
            "requirements.txt",
            "--install",
            "true",
        ],
        &[],
    );
    assert_eq!(flags.code, 0, "{}", flags.stderr);
    assert_eq!(flags.stdout.trim().len(), 64, "{}", flags.stdout);
}
