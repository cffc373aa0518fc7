//! Several stateless `cache-server` replicas over one bucket of a real
//! three-node Garage cluster: what one replica writes the others read, what
//! one deletes the others stop serving, leases and eviction are decided in
//! the bucket, a lost Garage node or a lost replica behind nginx fails no
//! request beyond those in flight, and large blob reads are redirected to
//! the object store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cachectl_e2e::api::{get_blob, put_blob};
use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::{Backend, CacheServer, GarageCluster, Nginx, ServerOptions};
use reqwest::StatusCode;

const MIB: usize = 1024 * 1024;

/// A replica over the cluster's bucket through node `node`, sharing `prefix`.
fn replica(cluster: &GarageCluster, node: usize, prefix: &str, args: &[&str]) -> CacheServer {
    CacheServer::start(
        Backend::garage(cluster, node, prefix),
        ServerOptions::args(args),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
}

async fn text_of(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_replica_writes_the_others_read_and_what_it_deletes_they_drop() {
    let cluster = GarageCluster::start();
    let fresh = ["--index-fresh-for", "1"];
    let a = replica(&cluster, 0, "shared", &fresh);
    let b = replica(&cluster, 1, "shared", &fresh);
    let c = replica(&cluster, 2, "shared", &fresh);
    let http = client();
    assert!(
        a.logs()
            .contains("leases in the bucket by write and verify"),
        "Garage ignores conditional puts, so leases must use write and verify:\n{}",
        a.logs()
    );

    // Blobs written through A are read through B and C, small and large.
    let small = random_bytes(3000, 1);
    let large = random_bytes(3 * MIB + 17, 2);
    for blob in [&small, &large] {
        assert_eq!(
            put_blob(&http, &a.base_url(), blob).await,
            StatusCode::CREATED
        );
    }
    for reader in [&b, &c] {
        for blob in [&small, &large] {
            let (status, body) = get_blob(&http, &reader.base_url(), &digest(blob)).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body == *blob, "wrong bytes through another replica");
        }
    }
    let head = http
        .head(c.url(&format!("/v1/cas/{}", digest(&large))))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        large.len().to_string()
    );

    // `missing` through a replica that never saw the blob asks storage.
    let unknown = digest(b"never stored");
    let written_elsewhere = random_bytes(1000, 3);
    assert_eq!(
        put_blob(&http, &b.base_url(), &written_elsewhere).await,
        StatusCode::CREATED
    );
    let missing = json_of(http.post(c.url("/v1/cas/missing")).json(&serde_json::json!({
        "digests": [
            digest(&small).to_string(), unknown.to_string(), digest(&written_elsewhere).to_string()
        ]
    })))
    .await;
    assert_eq!(missing["missing"], serde_json::json!([unknown.to_string()]));

    // An action-cache entry deleted through A: B reads storage on GET, so
    // it answers 404 at once, and its HEAD (answered from its index) turns
    // 404 once the row is older than --index-fresh-for.
    let key = "ab".repeat(32);
    let entry = |server: &CacheServer| server.url(&format!("/v1/ac/{key}"));
    assert_eq!(
        status_of(http.put(entry(&a)).body("v1")).await,
        StatusCode::CREATED
    );
    assert_eq!(text_of(http.get(entry(&b))).await, "v1");
    assert_eq!(status_of(http.head(entry(&b))).await, StatusCode::OK);
    assert_eq!(
        status_of(http.delete(entry(&a))).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status_of(http.get(entry(&b))).await, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status_of(http.head(entry(&c))).await, StatusCode::NOT_FOUND);
    assert_eq!(status_of(http.head(entry(&b))).await, StatusCode::NOT_FOUND);

    // A compare-and-set through B sees A's write, not B's stale row.
    assert_eq!(
        status_of(http.put(entry(&a)).body("v2")).await,
        StatusCode::CREATED
    );
    let etag_v2 = format!("\"{}\"", blake3::hash(b"v2").to_hex());
    assert_eq!(
        status_of(
            http.put(entry(&b))
                .header("if-match", format!("\"{}\"", blake3::hash(b"v1").to_hex()))
                .body("v3")
        )
        .await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        status_of(http.put(entry(&b)).header("if-match", &etag_v2).body("v3")).await,
        StatusCode::OK
    );
    assert_eq!(text_of(http.get(entry(&c))).await, "v3");

    // A ccache entry (replaceable, deletable) deleted through A is gone on B
    // even though B served it a moment ago (entries are never served from
    // B's memory when replicas share the bucket).
    let path = format!("/ccache/ab/{}", "cd".repeat(19));
    assert_eq!(
        status_of(http.put(a.url(&path)).body("object")).await,
        StatusCode::CREATED
    );
    assert_eq!(status_of(http.get(b.url(&path))).await, StatusCode::OK);
    assert_eq!(
        status_of(http.delete(a.url(&path))).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(http.get(b.url(&path))).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_askers_on_each_of_two_replicas_get_one_lease() {
    let cluster = GarageCluster::start();
    let a = replica(&cluster, 0, "leases", &[]);
    let b = replica(&cluster, 1, "leases", &[]);
    let http = client();
    let key = "5e".repeat(32);
    let askers = (0..100).map(|i| {
        let url = if i % 2 == 0 { &a } else { &b }.url(&format!("/v1/leases/{key}"));
        let http = http.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&serde_json::json!({ "holder": format!("job-{i}"), "ttl_seconds": 600 }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let lease: serde_json::Value = response.json().await.unwrap();
            (
                status,
                lease["holder"].as_str().unwrap_or_default().to_owned(),
            )
        })
    });
    let mut granted = Vec::new();
    let mut holders_named = std::collections::BTreeSet::new();
    for asker in askers {
        let (status, holder) = asker.await.unwrap();
        match status {
            StatusCode::CREATED => granted.push(holder.clone()),
            StatusCode::CONFLICT => {}
            other => panic!("lease answer {other}"),
        }
        holders_named.insert(holder);
    }
    assert_eq!(granted.len(), 1, "granted to {granted:?}");
    // The refused ones were told who builds (the winner, or a rival whose
    // write was overwritten and who then lost).
    assert!(holders_named.contains(&granted[0]));
    // Both replicas now refuse everyone else, and release works across them.
    let holder = &granted[0];
    for server in [&a, &b] {
        let response = http
            .post(server.url(&format!("/v1/leases/{key}")))
            .json(&serde_json::json!({ "holder": "late", "ttl_seconds": 60 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let lease: serde_json::Value = response.json().await.unwrap();
        assert_eq!(lease["holder"], holder.as_str());
    }
    assert_eq!(
        status_of(http.delete(b.url(&format!("/v1/leases/{key}?holder={holder}")))).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(
            http.post(a.url(&format!("/v1/leases/{key}")))
                .json(&serde_json::json!({ "holder": "late", "ttl_seconds": 60 }))
        )
        .await,
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_from_two_replicas_keeps_the_bucket_under_quota() {
    let cluster = GarageCluster::start();
    let quota = ["--max-size", "8MiB", "--eviction-interval", "1"];
    let a = replica(&cluster, 0, "evict", &quota);
    let b = replica(&cluster, 1, "evict", &quota);
    let observer = replica(&cluster, 2, "evict", &["--index-fresh-for", "0"]);
    let http = client();
    let blobs: Vec<Vec<u8>> = (0..24).map(|i| random_bytes(MIB, 100 + i)).collect();
    for (i, blob) in blobs.iter().enumerate() {
        let writer = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            put_blob(&http, &writer.base_url(), blob).await,
            StatusCode::CREATED
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let all: Vec<String> = blobs.iter().map(|b| digest(b).to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let present = loop {
        let missing = json_of(
            http.post(observer.url("/v1/cas/missing"))
                .json(&serde_json::json!({ "digests": all })),
        )
        .await;
        let missing = missing["missing"].as_array().unwrap().len();
        let present = all.len() - missing;
        if present <= 8 || Instant::now() > deadline {
            break present;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Each 1 MiB random blob is stored as its own bytes: 8 fit in 8 MiB.
    assert!(present <= 8, "{present} MiB left under an 8 MiB quota");
    assert!(present >= 4, "evicted far too much: {present} left");
    // The newest survive: least recently used go first.
    let (status, _) = get_blob(&http, &observer.base_url(), &digest(&blobs[23])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_blob(&http, &observer.base_url(), &digest(&blobs[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Neither replica crashed or failed a pass, and both still serve.
    for server in [&a, &b] {
        assert_eq!(
            status_of(http.get(server.url("/healthz"))).await,
            StatusCode::OK
        );
        assert!(
            !server.logs().contains("eviction pass failed"),
            "{}",
            server.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_garage_node_stops_no_read_or_write_and_rejoins() {
    let mut cluster = GarageCluster::start();
    // Garage takes up to about 9 s to route the first write around a node
    // that just died: the storage timeout must be longer than that.
    let a = replica(
        &cluster,
        0,
        "nodes",
        &["--index-fresh-for", "0", "--storage-timeout", "30"],
    );
    let http = client();
    let before: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(600_000, 200 + i)).collect();
    for blob in &before {
        assert_eq!(
            put_blob(&http, &a.base_url(), blob).await,
            StatusCode::CREATED
        );
    }
    cluster.kill(2);
    let killed = Instant::now();
    // Quorum 2 of 3: reads of old blobs and writes of new ones go on.
    let during: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(600_000, 300 + i)).collect();
    for blob in &during {
        assert_eq!(
            put_blob(&http, &a.base_url(), blob).await,
            StatusCode::CREATED
        );
    }
    for blob in before.iter().chain(&during) {
        let (status, body) = get_blob(&http, &a.base_url(), &digest(blob)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == *blob);
    }
    eprintln!(
        "with one Garage node down: 4 writes and 8 reads took {:?}",
        killed.elapsed()
    );
    cluster.restart(2);
    // The node rejoins: a replica talking to it alone reads everything,
    // including what was written while it was down.
    let through_rejoined = replica(&cluster, 2, "nodes", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    for blob in before.iter().chain(&during) {
        loop {
            let (status, body) = get_blob(&http, &through_rejoined.base_url(), &digest(blob)).await;
            if status == StatusCode::OK {
                assert!(body == *blob);
                break;
            }
            assert!(Instant::now() < deadline, "rejoined node answers {status}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(
        put_blob(
            &http,
            &through_rejoined.base_url(),
            &random_bytes(1000, 400)
        )
        .await,
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_behind_nginx_fails_no_request_beyond_those_in_flight() {
    let cluster = GarageCluster::start();
    let mut replicas: Vec<CacheServer> = (0..3)
        .map(|n| replica(&cluster, n, "balanced", &[]))
        .collect();
    let addresses: Vec<_> = replicas.iter().map(CacheServer::address).collect();
    let nginx = Nginx::start(&addresses);
    let base = nginx.base_url();
    let http = client();

    const WORKERS: usize = 8;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (http, base, stop, ok, failed) = (
                http.clone(),
                base.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let blob = random_bytes(20_000, 10_000 * w as u64 + i);
                    i += 1;
                    let put = put_blob(&http, &base, &blob).await;
                    let (got, body) = get_blob(&http, &base, &digest(&blob)).await;
                    if put.is_success() && got == StatusCode::OK && body == blob {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.lock().unwrap().push(format!("put {put}, get {got}"));
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = ok.load(Ordering::Relaxed);
    replicas[1].kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.lock().unwrap().clone();
    eprintln!(
        "behind nginx: {before_kill} PUT+GET pairs before the kill, {ok} in all, {} failed",
        failed.len()
    );
    assert!(
        before_kill > 10,
        "too little traffic before the kill: {before_kill}"
    );
    assert!(
        ok > before_kill + 10,
        "traffic did not go on after the kill"
    );
    assert!(
        failed.len() <= WORKERS,
        "{} failed requests after killing one of three replicas (at most the {WORKERS} in flight may fail): {failed:?}",
        failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_blob_get_is_redirected_to_the_object_store() {
    let cluster = GarageCluster::start();
    let server = replica(&cluster, 0, "redirect", &["--redirect-reads-over", "1MiB"]);
    let blob = random_bytes(64 * MIB, 500);
    let http = client();
    assert_eq!(
        put_blob(&http, &server.base_url(), &blob).await,
        StatusCode::CREATED
    );

    let url = server.url(&format!("/v1/cas/{}", digest(&blob)));
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_follow.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let s3 = cluster.s3_address(0).to_string();
    assert!(
        location.starts_with(&format!("http://{s3}/")) && location.contains("X-Amz-Signature="),
        "not a presigned URL of the object store: {location}"
    );

    // A client that follows gets the right bytes, from Garage; a range too.
    let (status, body) = get_blob(&http, &server.base_url(), &digest(&blob)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        digest(&body) == digest(&blob),
        "redirected read returned other bytes"
    );
    let ranged = http
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert!(ranged.bytes().await.unwrap() == blob[1000..2000]);

    // A client that cannot follow, and a small blob, are served directly.
    let direct = no_follow
        .get(&url)
        .header("x-cache-no-redirect", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
    assert!(digest(&direct.bytes().await.unwrap()) == digest(&blob));
    let small = random_bytes(1000, 501);
    assert_eq!(
        put_blob(&http, &server.base_url(), &small).await,
        StatusCode::CREATED
    );
    let answer = no_follow
        .get(server.url(&format!("/v1/cas/{}", digest(&small))))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_deploy_events_are_shared_by_every_replica() {
    let cluster = GarageCluster::start();
    let required = ["--auth", "required"];
    let a = replica(&cluster, 0, "team", &required);
    let b = replica(&cluster, 1, "team", &required);
    let admin = a.create_token("admin", "ops", &[]);
    let ci = a.create_token("write", "ci", &[]);
    let http = client();
    let blob = random_bytes(5000, 600);
    let url = |server: &CacheServer| server.url(&format!("/v1/cas/{}", digest(&blob)));
    assert_eq!(
        status_of(http.put(url(&b)).bearer_auth(&ci).body(blob.clone())).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(http.get(url(&a)).bearer_auth(&ci)).await,
        StatusCode::OK
    );
    assert_eq!(status_of(http.get(url(&a))).await, StatusCode::UNAUTHORIZED);

    // Events posted to either replica are listed by both.
    for (server, image) in [(&a, "one"), (&b, "two")] {
        let event = serde_json::json!({
            "kind": "build", "image": image, "hit": true, "seconds": 1.5, "phases": {}, "bytes": 0
        });
        assert_eq!(
            status_of(
                http.post(server.url("/v1/events"))
                    .bearer_auth(&ci)
                    .json(&event)
            )
            .await,
            StatusCode::CREATED
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for server in [&a, &b] {
        let list = json_of(http.get(server.url("/v1/events")).bearer_auth(&admin)).await;
        let images: Vec<_> = list["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["image"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(images, ["two", "one"]);
    }

    // Revoked through A's API, the token stops working on B within the
    // token cache's 5 s.
    assert_eq!(
        status_of(http.delete(a.url("/v1/tokens/ci")).bearer_auth(&admin)).await,
        StatusCode::NO_CONTENT
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let status = status_of(http.get(url(&b)).bearer_auth(&ci)).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revoked token still works on B: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cachectl_restores_a_folder_through_redirecting_replicas_behind_nginx() {
    use cachectl_e2e::cachectl::{Project, deps_cache_args};
    let cluster = GarageCluster::start();
    let servers: Vec<CacheServer> = (0..2)
        .map(|n| replica(&cluster, n, "folders", &["--redirect-reads-over", "1MiB"]))
        .collect();
    let addresses: Vec<_> = servers.iter().map(CacheServer::address).collect();
    let nginx = Nginx::start(&addresses);
    let url = nginx.base_url();
    let run = |project: &Project, verb: &str| {
        project.cachectl(
            &[&["cache", verb, "--json"][..], &deps_cache_args(&url)].concat(),
            &[],
        )
    };
    let big = random_bytes(6 * MIB, 700);
    let saved = Project::new();
    saved.write("lock.txt", "v1\n");
    saved.write("deps/small.txt", "small\n");
    std::fs::write(saved.path().join("deps/big.bin"), &big).unwrap();
    // 200 small random files: one 1.6 MiB pack, stored as it is and so
    // itself read through a redirect; and 100 text files.
    for i in 0..300u64 {
        let content = if i < 200 {
            random_bytes(8 * 1024, 7000 + i)
        } else {
            format!("module.exports = {i};\n").repeat(50).into_bytes()
        };
        std::fs::create_dir_all(saved.path().join(format!("deps/p{}", i % 3))).unwrap();
        std::fs::write(saved.path().join(format!("deps/p{}/f{i}", i % 3)), content).unwrap();
    }
    let first = run(&saved, "save").success().json();
    assert_eq!(first["uploaded_packs"], 1, "{first}");

    let fresh = Project::new();
    fresh.write("lock.txt", "v1\n");
    let restored = run(&fresh, "restore").success().json();
    assert_eq!(restored["hit"], "exact");
    assert!(std::fs::read(fresh.path().join("deps/big.bin")).unwrap() == big);
    assert_eq!(
        std::fs::read_to_string(fresh.path().join("deps/small.txt")).unwrap(),
        "small\n"
    );
    for i in [0u64, 199, 200, 299] {
        assert_eq!(
            std::fs::read(fresh.path().join(format!("deps/p{}/f{i}", i % 3))).unwrap(),
            std::fs::read(saved.path().join(format!("deps/p{}/f{i}", i % 3))).unwrap(),
        );
    }
    // A one-file change saved through one replica or the other keeps the
    // pack: one new small pack. Restored over the first restore, only that
    // file comes, and one file missing comes by a range of the old pack.
    saved.write("deps/p1/f1", "changed\n");
    let second = run(&saved, "save").success().json();
    assert_eq!(
        (
            second["uploaded_files"].as_u64(),
            second["uploaded_packs"].as_u64()
        ),
        (Some(1), Some(1)),
        "{second}"
    );
    std::fs::remove_file(fresh.path().join("deps/p2/f2")).unwrap();
    let updated = run(&fresh, "restore").success().json();
    assert_eq!(
        (
            updated["downloaded_files"].as_u64(),
            updated["written_files"].as_u64()
        ),
        (Some(2), Some(2)),
        "{updated}"
    );
    assert!(
        updated["downloaded_bytes"].as_u64().unwrap() < 64 * 1024,
        "{updated}"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.path().join("deps/p1/f1")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read(fresh.path().join("deps/p2/f2")).unwrap(),
        std::fs::read(saved.path().join("deps/p2/f2")).unwrap(),
    );
    // The large file came from Garage through a redirect, not through a replica.
    let http = client();
    let mut redirected = 0.0;
    for server in &servers {
        let metrics = http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        redirected += metrics
            .lines()
            .filter(|line| line.starts_with("cache_redirected_bytes_total"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(
        redirected >= big.len() as f64,
        "only {redirected} bytes were redirected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_a_store_with_conditional_puts_compare_and_set_is_a_conditional_write() {
    let s3 = cachectl_e2e::S3Server::start();
    let a = CacheServer::start(Backend::s3(&s3, "cas"), ServerOptions::default());
    let b = CacheServer::start(Backend::s3(&s3, "cas"), ServerOptions::default());
    assert!(
        a.logs()
            .contains("leases in the bucket by conditional puts"),
        "s3s-fs honours conditional puts:\n{}",
        a.logs()
    );
    let http = client();
    let key = "cd".repeat(32);
    let entry = |server: &CacheServer| server.url(&format!("/v1/ac/{key}"));
    let etag = |value: &[u8]| format!("\"{}\"", blake3::hash(value).to_hex());
    // Create-only through A, then again through B: the second is refused.
    assert_eq!(
        status_of(http.put(entry(&a)).header("if-none-match", "*").body("v1")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(http.put(entry(&b)).header("if-none-match", "*").body("v1b")).await,
        StatusCode::PRECONDITION_FAILED
    );
    // Replace-if-unchanged through B lands (a conditional put on the
    // store's version); the same precondition through A is now stale.
    assert_eq!(
        status_of(
            http.put(entry(&b))
                .header("if-match", etag(b"v1"))
                .body("v2")
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(
            http.put(entry(&a))
                .header("if-match", etag(b"v1"))
                .body("v3")
        )
        .await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(text_of(http.get(entry(&a))).await, "v2");
    // Leases over this store: one holder across both replicas.
    let lease = |server: &CacheServer, holder: &str| {
        http.post(server.url(&format!("/v1/leases/{key}")))
            .json(&serde_json::json!({ "holder": holder, "ttl_seconds": 60 }))
    };
    assert_eq!(status_of(lease(&a, "one")).await, StatusCode::CREATED);
    assert_eq!(status_of(lease(&b, "two")).await, StatusCode::CONFLICT);
}
