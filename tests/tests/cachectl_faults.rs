//! `cachectl` under faults and hostile input: killed mid-push, a registry
//! that is gone, two hundred jobs racing for one missing base, malformed
//! configuration files and app folders built to trip a tar writer.

use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachectl_e2e::CacheServer;
use cachectl_e2e::bins::workspace_binary;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::random_bytes;
use cachectl_e2e::registry::{RegistryServer, push_busybox};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

fn long_suite() -> bool {
    std::env::var_os("CACHECTL_LONG_SUITE").is_some()
}

/// Every tag of `repository` names a manifest the registry has, and every
/// blob that manifest names is there too. Returns the tags.
async fn assert_every_tag_resolves(host: &str, repository: &str) -> Vec<String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let listed = client
        .get(format!("http://{host}/v2/{repository}/tags/list"))
        .send()
        .await
        .expect("the registry answers");
    if listed.status() == 404 {
        return Vec::new();
    }
    let listed: serde_json::Value = listed.json().await.expect("a tag list");
    let tags: Vec<String> = listed["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for tag in &tags {
        let response = client
            .get(format!("http://{host}/v2/{repository}/manifests/{tag}"))
            .header("accept", MANIFEST_TYPES)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "tag {tag} points at a missing manifest"
        );
        let manifest: serde_json::Value = response.json().await.unwrap();
        let mut blobs: Vec<String> = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|layer| layer["digest"].as_str().map(str::to_owned))
            .collect();
        if let Some(config) = manifest["config"]["digest"].as_str() {
            blobs.push(config.to_owned());
        }
        for blob in blobs {
            let head = client
                .head(format!("http://{host}/v2/{repository}/blobs/{blob}"))
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 200, "tag {tag}: blob {blob} is missing");
        }
    }
    tags
}

/// A pseudo-random delay in `min..max` milliseconds from `seed`.
fn delay_ms(seed: u64, min: u64, max: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    min + (x ^ (x >> 31)) % (max - min)
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_cachectl_mid_push_leaves_no_tag_on_a_missing_manifest() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let project = Project::new();
    for file in 0..4 {
        let content = random_bytes(12 << 20, 40 + file);
        let path = project.path().join(format!("app/data{file}.bin"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let rounds = if long_suite() { 20 } else { 5 };
    let image = format!("{}/acme/app:release", registry.host());
    let mut killed_before_the_end = 0;
    for round in 0..rounds {
        // A different app each round, so every push has bytes to send.
        project.write("app/round.txt", &format!("{round}\n"));
        let mut child = Command::new(workspace_binary("cachectl"))
            .current_dir(project.path())
            .env("CACHECTL_CACHE_DIR", project.path().join(".cachectl"))
            .env("DOCKER_CONFIG", project.path().join(".docker"))
            .env_remove("CACHECTL_CACHE")
            .args([
                "layer",
                "--json",
                "--base",
                &base,
                "--app-image",
                &image,
                "--context",
                "app",
                "--compression-level",
                "6",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cachectl starts");
        tokio::time::sleep(Duration::from_millis(delay_ms(round, 50, 900))).await;
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_before_the_end += 1;
        }
        assert_every_tag_resolves(&registry.host(), "acme/app").await;
    }
    assert!(
        killed_before_the_end * 2 >= rounds,
        "only {killed_before_the_end} of {rounds} kills landed before the end"
    );
    // The next run finishes, and what it tagged is whole.
    project.layer(&base, &image, &[], &[]).success();
    let tags = assert_every_tag_resolves(&registry.host(), "acme/app").await;
    assert!(tags.contains(&"release".to_owned()), "{tags:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_registry_exits_3_and_records_nothing() {
    let server = CacheServer::local();
    let registry = RegistryServer::start();
    let image = format!("{}/acme/gone-base", registry.host());
    let project = Project::native_with_cache(&image, &server.base_url(), 3);
    let key = project.cachectl(&["hash"], &[]).success().stdout;
    let key = key.trim().to_owned();
    drop(registry);

    let run = project.cachectl(&["ensure-base", "--json"], &[]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("unreachable") || run.stderr.contains("registry"),
        "not a clear message: {}",
        run.stderr
    );
    // No record under the key, no latest record, no lease left held.
    let stats = server.get_json("/v1/stats", None).await;
    assert_eq!(
        stats["stored"]["action_entries"].as_u64(),
        Some(0),
        "{stats}"
    );
    let lease = server
        .client
        .post(server.url(&format!("/v1/leases/{key}")))
        .json(&serde_json::json!({"holder": "another-job", "ttl_seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(lease.status(), 201, "the failed run left its lease held");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_jobs_on_one_missing_key_build_once() {
    let registry = RegistryServer::start();
    let server = CacheServer::local();
    let image = format!("{}/acme/crowd-base", registry.host());
    let project = Project::native_with_cache(&image, &server.base_url(), 3);
    let jobs = 200;
    let started = Instant::now();
    let runs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|_| scope.spawn(|| project.cachectl(&["ensure-base", "--json"], &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let reports: Vec<_> = runs.into_iter().map(|run| run.success().json()).collect();
    assert_eq!(project.builds(), 1, "{} builds", project.builds());
    assert_eq!(reports.iter().filter(|r| r["source"] == "built").count(), 1);
    assert!(
        reports.iter().all(|r| r["digest"] == reports[0]["digest"]),
        "the jobs disagree on the base"
    );
    eprintln!("{jobs} concurrent ensure-base: 1 build, all done in {elapsed:?}");
}

#[test]
fn malformed_configuration_files_exit_2_and_never_panic() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", random_bytes(4096, 5)),
        ("not UTF-8", b"[base]\nimage = \"\xff\xfe\"\n".to_vec()),
        ("unclosed table", b"[base\nimage = \"x\"\n".to_vec()),
        ("wrong type", b"[base]\nimage = 42\n".to_vec()),
        ("unknown builder", b"[base]\nimage = \"oci:./o\"\nmanifests = [\"a\"]\nbuilder = \"magic\"\n".to_vec()),
        ("NUL in a string", b"[base]\nimage = \"a\\u0000b\"\nmanifests = [\"x\"]\n".to_vec()),
        ("deep nesting", format!("x = {}{}\n", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
        ("huge string", format!("[base]\nimage = \"{}\"\n", "a".repeat(4 << 20)).into_bytes()),
        ("manifest escaping the root", b"[base]\nimage = \"oci:./o\"\nmanifests = [\"../../../../etc/passwd\"]\ninstall = \"true\"\n".to_vec()),
        ("empty manifests", b"[base]\nimage = \"oci:./o\"\nmanifests = []\ninstall = \"true\"\n".to_vec()),
    ];
    for (what, content) in cases {
        let project = Project::new();
        std::fs::write(project.path().join("cachectl.toml"), &content).unwrap();
        let run = project.cachectl(&["ensure-base"], &[]);
        assert_eq!(run.code, 2, "{what}: exit {}\n{}", run.code, run.stderr);
        assert!(
            run.stderr.contains("cachectl.toml") || run.stderr.contains("manifest"),
            "{what}: the message names neither the file nor the field: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
    }
}

#[test]
fn app_folders_with_loops_long_and_non_utf8_names_layer_byte_exact() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let project = Project::new();
    let app = project.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    // Symlink loops: a pair pointing at each other, one at itself, and a
    // folder link to its own parent. Stored as links, never followed.
    std::os::unix::fs::symlink("loop-b", app.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", app.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("self", app.join("self")).unwrap();
    std::os::unix::fs::symlink(".", app.join("here")).unwrap();
    // A 255-byte name (the most a file system allows), a path over 255
    // bytes in total, and names that are not UTF-8.
    let long_name = "n".repeat(255);
    std::fs::write(app.join(&long_name), b"long name\n").unwrap();
    let deep: std::path::PathBuf = (0..6).map(|i| format!("{i}{}", "d".repeat(60))).collect();
    std::fs::create_dir_all(app.join(&deep)).unwrap();
    std::fs::write(app.join(&deep).join("file.txt"), b"deep\n").unwrap();
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(app.join(latin1), b"latin-1 name\n").unwrap();
    let invalid_link = std::ffi::OsStr::from_bytes(b"link-\xff");
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(b"target-\xfe"),
        app.join(invalid_link),
    )
    .unwrap();

    // Found by the tar_writer fuzzer: a path too long for ustar whose last
    // 99 bytes begin with `../` once cut (`<200 d>/xx../<96 c>`); its ASCII
    // stand-in formed a `..` component and `cachectl build` exited 1.
    let dotted: std::path::PathBuf = ["d".repeat(200), "xx..".to_owned()].iter().collect();
    std::fs::create_dir_all(app.join(&dotted)).unwrap();
    let dotted_file = dotted.join("c".repeat(96));
    std::fs::write(app.join(&dotted_file), b"dotted tail\n").unwrap();

    let image = format!("{}/acme/odd:1", registry.host());
    project.layer(&base, &image, &[], &[]).success();

    // Read the pushed layer back from the registry and list its entries.
    let entries = pushed_layer_entries(&registry, "acme/odd", "1");
    let has = |name: &[u8]| entries.iter().any(|(path, _)| path.ends_with(name));
    assert!(has(long_name.as_bytes()), "the 255-byte name is missing");
    assert!(has(b"file.txt"), "the deep file is missing");
    assert!(has(b"caf\xe9.txt"), "the latin-1 name is not byte-exact");
    let link = entries
        .iter()
        .find(|(path, _)| path.ends_with(b"link-\xff"))
        .expect("the non-UTF-8 link is missing");
    assert_eq!(link.1.as_deref(), Some(&b"target-\xfe"[..]));
    let loop_a = entries
        .iter()
        .find(|(path, _)| path.ends_with(b"loop-a"))
        .expect("the looping link is missing");
    assert_eq!(loop_a.1.as_deref(), Some(&b"loop-b"[..]));
    let deep_path = entries
        .iter()
        .find(|(path, _)| path.ends_with(b"file.txt"))
        .unwrap();
    assert!(deep_path.0.len() > 255, "{}", deep_path.0.len());
    let dotted_tail = format!("app/{}", dotted_file.display()).into_bytes();
    assert!(
        has(&dotted_tail),
        "the path with a `xx../` tail is missing or not byte-exact"
    );
}

/// `(path, link target)` of every entry of the top layer of `repo:tag`.
fn pushed_layer_entries(
    registry: &RegistryServer,
    repository: &str,
    tag: &str,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let host = registry.host();
    let manifest: serde_json::Value = runtime.block_on(async {
        client
            .get(format!("http://{host}/v2/{repository}/manifests/{tag}"))
            .header("accept", MANIFEST_TYPES)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let top = manifest["layers"]
        .as_array()
        .and_then(|layers| layers.last())
        .and_then(|layer| layer["digest"].as_str())
        .expect("a top layer")
        .to_owned();
    let compressed = runtime.block_on(async {
        client
            .get(format!("http://{host}/v2/{repository}/blobs/{top}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let tar = flate2::read::GzDecoder::new(&compressed[..]);
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            (path, link)
        })
        .collect()
}
