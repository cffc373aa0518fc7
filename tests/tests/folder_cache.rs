//! `cachectl cache save|restore` against a real cache server: a large
//! generated tree comes back byte- and mode-exact, a one-file change
//! uploads one file and the manifest, a key miss restores the newest save
//! of the name, a hostile manifest writes nothing outside the target, and
//! an unreachable cache never fails the job unless asked to.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cachectl_e2e::cachectl::{Project, Run};
use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::{Backend, CacheServer, ServerOptions};

fn cache(project: &Project, server: &str, verb: &str, path: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "cache",
        verb,
        "--json",
        "--cache",
        server,
        "--name",
        "deps",
        "--key-files",
        "lock.txt",
        "--path",
        path,
    ];
    args.extend_from_slice(extra);
    project.cachectl(&args, &[])
}

/// A tree of nested folders, 10,000 small files, executables, symlinks,
/// empty files and one 200 MB file.
fn generate_tree(root: &Path) {
    for i in 0..10_000u32 {
        let folder = root.join(format!("pkg{}/sub{}", i % 50, i % 7));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("f{i}.js"));
        let content = if i % 500 == 0 {
            Vec::new()
        } else {
            format!("module.exports = {i};\n").into_bytes()
        };
        std::fs::write(&path, content).unwrap();
        if i % 1000 == 1 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("../pkg1/sub1/f1.js", root.join("pkg0/link.js")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::write(root.join("big.bin"), random_bytes(200 << 20, 3)).unwrap();
}

/// `(path, kind and mode, content digest or link target)` of every entry.
fn describe(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                "dir".to_owned()
            } else {
                let mode = meta.permissions().mode() & 0o111 != 0;
                format!("file x={mode} {}", digest(&std::fs::read(&path).unwrap()))
            };
            out.push((name, what));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_tree_round_trips_and_a_one_file_change_uploads_one_file() {
    let options = ServerOptions {
        log: Some("info,tower_http=debug".into()),
        ..ServerOptions::default()
    };
    let server = CacheServer::start(Backend::Local, options);
    let requests = |server: &CacheServer| {
        server
            .logs()
            .lines()
            .filter(|line| line.contains("finished processing request"))
            .count()
    };
    let url = server.base_url();
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    let tree = project.path().join("deps");
    generate_tree(&tree);

    let first = cache(&project, &url, "save", "deps", &[]).success().json();
    assert_eq!(first["files"], 10_001, "{first}");
    // Small files go in batches: a handful of requests, not 10,000.
    let saved_with = requests(&server);
    assert!(saved_with < 50, "the first save took {saved_with} requests");
    let stored_before = server.get_json("/v1/stats", None).await["stored"]["blobs"]
        .as_u64()
        .unwrap();

    // One file changes: one new content and the manifest go up, no more.
    std::fs::write(tree.join("pkg3/sub3/f3.js"), "changed\n").unwrap();
    let second = cache(&project, &url, "save", "deps", &[]).success().json();
    assert_eq!(second["uploaded_files"], 1, "{second}");
    // The manifest (10,001 digests, ~420 KB compressed) is most of it:
    // under 1 % of the folder, as the goal asks.
    let total = second["bytes"].as_u64().unwrap();
    assert!(
        second["uploaded_bytes"].as_u64().unwrap() * 100 < total,
        "{second}"
    );
    let stored_after = server.get_json("/v1/stats", None).await["stored"]["blobs"]
        .as_u64()
        .unwrap();
    assert_eq!(stored_after, stored_before + 2, "one file and one manifest");

    // Exact restore into a fresh folder: byte- and mode-exact.
    let restored = project.path().join("fresh");
    let exact = cache(&project, &url, "restore", "fresh", &[])
        .success()
        .json();
    assert_eq!(exact["hit"], "exact", "{exact}");
    assert_eq!(describe(&restored), describe(&tree));

    // Restoring again over it downloads nothing.
    let again = cache(&project, &url, "restore", "fresh", &[])
        .success()
        .json();
    assert_eq!(again["downloaded_files"], 0, "{again}");
    assert_eq!(again["written_files"], 0, "{again}");

    // A new lock file: a partial hit on the newest save of the name.
    project.write("lock.txt", "v2\n");
    let other = project.path().join("other");
    let partial = cache(&project, &url, "restore", "other", &[])
        .success()
        .json();
    assert_eq!(partial["hit"], "partial", "{partial}");
    assert_eq!(partial["restored_key"], second["key"]);
    assert_eq!(describe(&other), describe(&tree));
    let github = project.path().join("gh-output");
    let run = project.cachectl(
        &[
            "cache",
            "restore",
            "--cache",
            &url,
            "--name",
            "nothing-yet",
            "--key-files",
            "lock.txt",
            "--path",
            "none",
        ],
        &[("GITHUB_OUTPUT", github.to_str().unwrap())],
    );
    assert_eq!(run.success().stdout.trim(), "miss");
    let outputs = std::fs::read_to_string(&github).unwrap();
    assert!(outputs.contains("cache-hit=false\n"), "{outputs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_manifest_writes_nothing_outside_the_target() {
    let server = CacheServer::local();
    let url = server.base_url();
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    project.write("deps/ok.txt", "fine\n");
    let saved = cache(&project, &url, "save", "deps", &[]).success().json();
    let key = saved["key"].as_str().unwrap().to_owned();

    let planted = b"planted\n";
    let planted_digest = digest(planted);
    server
        .client
        .put(server.url(&format!("/v1/cas/{planted_digest}")))
        .body(planted.to_vec())
        .send()
        .await
        .unwrap();
    let outside = project.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let file = |path: &str| serde_json::json!({"path": path, "kind": "file", "digest": planted_digest.to_string(), "size": planted.len(), "executable": false});
    let manifests = [
        serde_json::json!({"version": 1, "entries": [file("../outside/escaped.txt")]}),
        serde_json::json!({"version": 1, "entries": [file("/tmp/cachectl-escaped.txt")]}),
        serde_json::json!({"version": 1, "entries": [
            {"path": "evil", "kind": "symlink", "target": outside.to_str().unwrap()},
            file("evil/escaped.txt"),
        ]}),
    ];
    for manifest in manifests {
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = digest(&bytes);
        server
            .client
            .put(server.url(&format!("/v1/cas/{manifest_digest}")))
            .body(bytes)
            .send()
            .await
            .unwrap();
        let record = serde_json::json!({"name": "deps", "key": key, "manifest": manifest_digest.to_string(), "files": 1, "bytes": 8, "created": 0});
        server
            .client
            .put(server.url(&format!("/v1/ac/{key}")))
            .json(&record)
            .send()
            .await
            .unwrap();
        let run = cache(&project, &url, "restore", "target", &[]);
        assert_ne!(
            run.code, 0,
            "a hostile manifest was restored: {}",
            run.stdout
        );
        assert!(run.stderr.contains("unsafe path"), "{}", run.stderr);
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "something was written outside the target"
        );
        assert!(!Path::new("/tmp/cachectl-escaped.txt").exists());
    }
}

#[test]
fn an_unreachable_cache_is_a_warning_unless_required() {
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    project.write("deps/a.txt", "a\n");
    let down = "http://127.0.0.1:9";
    let save = cache(&project, down, "save", "deps", &[]);
    assert_eq!(save.code, 0, "{}", save.stderr);
    assert!(save.stderr.contains("warning"), "{}", save.stderr);
    let restore = cache(&project, down, "restore", "target", &[]);
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    assert_eq!(restore.json()["hit"], "miss");
    let required = cache(&project, down, "restore", "target", &["--require-cache"]);
    assert_eq!(required.code, 3, "{}", required.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_store_only_verified_records_and_return_what_is_stored() {
    let server = CacheServer::local();
    let good = b"a small file\n".to_vec();
    let bad = b"content that is not what its digest says".to_vec();
    let mut body = Vec::new();
    cache_proto::batch::push(&mut body, &digest(&good), &good);
    cache_proto::batch::push(&mut body, &digest(b"something else"), &bad);
    let answer = server
        .client
        .post(server.url("/v1/cas/batch"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400, "a wrong record must be reported");
    let stored = |d: cache_proto::Digest| {
        let client = server.client.clone();
        let url = server.url(&format!("/v1/cas/{d}"));
        async move { client.head(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(stored(digest(&good)).await, 200);
    assert_eq!(stored(digest(b"something else")).await, 404);

    // A truncated batch and a zstd bomb are refused, nothing stored.
    let mut cut = Vec::new();
    cache_proto::batch::push(&mut cut, &digest(b"cut"), b"cut");
    cut.pop();
    let status = server
        .client
        .post(server.url("/v1/cas/batch"))
        .body(cut)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    let status = server
        .client
        .post(server.url("/v1/cas/batch"))
        .header("content-encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 413);
    assert_eq!(stored(digest(b"cut")).await, 404);

    // batch-get answers the stored ones, leaves out the rest.
    let wanted =
        serde_json::json!({"digests": [digest(&good).to_string(), digest(b"absent").to_string()]});
    let answer = server
        .client
        .post(server.url("/v1/cas/batch-get"))
        .json(&wanted)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let records = cache_proto::batch::parse(&answer).unwrap();
    assert_eq!(records, vec![(digest(&good), &good[..])]);
}

/// Small files travel in packs (a few ordinary CAS blobs): the packs
/// survive a lost index and `reindex`; a restore over a folder missing one
/// file fetches only that file's range of its pack; and a save whose pack
/// was evicted under the quota restores nothing (a warning and a miss)
/// instead of half a folder.
#[tokio::test(flavor = "multi_thread")]
async fn packs_survive_reindex_fetch_ranges_and_an_evicted_pack_is_a_miss() {
    let mut server =
        CacheServer::start(Backend::Local, ServerOptions::args(&["--max-size", "8MiB"]));
    let url = server.base_url();
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    let tree = project.path().join("deps");
    for i in 0..300u64 {
        let folder = tree.join(format!("pkg{}", i % 7));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("m{i}.bin")), random_bytes(8 * 1024, i)).unwrap();
    }
    let saved = cache(&project, &url, "save", "deps", &[]).success().json();
    assert_eq!(
        (saved["files"].as_u64(), saved["uploaded_packs"].as_u64()),
        (Some(300), Some(1)),
        "{saved}"
    );
    // Two blobs: the pack and the manifest.
    assert_eq!(
        server.get_json("/v1/stats", None).await["stored"]["blobs"],
        2
    );

    // The index is lost and rebuilt from storage: the save restores.
    assert!(server.stop());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.index_path().display()));
    }
    let (ok, output) = server.run_subcommand("reindex");
    assert!(ok && output.contains("reindexed 2 blobs"), "{output}");
    server.start_again();
    let url = server.base_url();
    let restored = cache(&project, &url, "restore", "fresh", &[])
        .success()
        .json();
    assert_eq!(restored["hit"], "exact", "{restored}");
    assert_eq!(describe(&project.path().join("fresh")), describe(&tree));

    // One file gone from the folder: only its bytes come back.
    std::fs::remove_file(project.path().join("fresh/pkg3/m3.bin")).unwrap();
    let again = cache(&project, &url, "restore", "fresh", &[])
        .success()
        .json();
    assert_eq!(
        (
            again["downloaded_files"].as_u64(),
            again["written_files"].as_u64()
        ),
        (Some(1), Some(1)),
        "{again}"
    );
    assert!(
        again["downloaded_bytes"].as_u64().unwrap() <= 8 * 1024,
        "{again}"
    );
    assert_eq!(describe(&project.path().join("fresh")), describe(&tree));

    // Other uploads push the pack out of the 8 MiB quota: the least
    // recently used goes, and the record and manifest are read just before.
    let record = server.url(&format!("/v1/ac/{}", saved["key"].as_str().unwrap()));
    let manifest = server.url(&format!("/v1/cas/{}", saved["manifest"].as_str().unwrap()));
    for url in [&record, &manifest] {
        assert_eq!(server.client.get(url).send().await.unwrap().status(), 200);
    }
    for seed in 0..2 {
        server.put_blob(&random_bytes(3 << 20, 900 + seed)).await;
    }
    for url in [&record, &manifest] {
        assert_eq!(server.client.head(url).send().await.unwrap().status(), 200);
    }
    let evicted = cache(&project, &url, "restore", "after-eviction", &[]);
    assert_eq!(evicted.code, 0, "{}", evicted.stderr);
    assert_eq!(evicted.json()["hit"], "miss");
    assert!(
        evicted.stderr.contains("lost 1 of its objects to eviction"),
        "{}",
        evicted.stderr
    );
    assert!(
        !project.path().join("after-eviction").exists(),
        "half a folder was restored"
    );
}

/// A real `node_modules`: the npm install of turbo that the test
/// dependencies put in place, saved, restored into a fresh folder, and run.
#[test]
fn a_real_npm_install_is_saved_restored_and_runs() {
    let installed = cachectl_e2e::bins::deps_dir().join("turbo");
    assert!(
        installed.join("node_modules/.bin/turbo").exists(),
        "turbo is not installed: run scripts/install-test-deps"
    );
    let server = CacheServer::local();
    let url = server.base_url();
    let project = Project::new();
    project.write("lock.txt", "turbo 2.11.11\n");
    std::fs::copy(
        installed.join("package.json"),
        project.path().join("package.json"),
    )
    .unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(installed.join("node_modules"))
        .arg(project.path().join("node_modules"))
        .status()
        .unwrap();
    assert!(copied.success());
    cache(&project, &url, "save", "node_modules", &[]).success();
    let fresh = Project::new();
    fresh.write("lock.txt", "turbo 2.11.11\n");
    std::fs::copy(
        installed.join("package.json"),
        fresh.path().join("package.json"),
    )
    .unwrap();
    let restored = cache(&fresh, &url, "restore", "node_modules", &[])
        .success()
        .json();
    assert_eq!(restored["hit"], "exact");
    assert_eq!(
        describe(&fresh.path().join("node_modules")),
        describe(&project.path().join("node_modules"))
    );
    let version = std::process::Command::new(fresh.path().join("node_modules/.bin/turbo"))
        .arg("--version")
        .current_dir(fresh.path())
        .output()
        .expect("the restored turbo runs");
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(String::from_utf8_lossy(&version.stdout).contains("2.11.11"));
}
