//! The compatibility protocols over HTTP with the requests the real clients
//! send (PROTOCOLS.md), and the real `ccache` and `turbo` clients against
//! the real server.

use std::path::Path;

use cachectl_e2e::clients::{
    ccache, ccache_stat, local_cache, nx, nx_workspace, turbo, turbo_workspace,
};
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};
use reqwest::StatusCode;
use sha2::Digest as _;

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

async fn stats(server: &CacheServer) -> serde_json::Value {
    server.get_json("/v1/stats", None).await
}

#[tokio::test]
async fn bazel_cas_is_verified_ac_is_replaced_and_blake3_shares_the_native_store() {
    let server = CacheServer::local();
    let client = &server.client;
    let content = b"bazel output".repeat(10_000);
    let sha = sha256_hex(&content);
    let cas = server.url(&format!("/team/cache/cas/{sha}"));

    assert_eq!(
        client.get(&cas).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // A body that is not what its digest says: rejected, nothing stored.
    let wrong = client.put(&cas).body("other").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        client.head(&cas).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // zstd upload with X-Digest-SizeBytes, as Bazel sends it.
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let put = client
        .put(&cas)
        .header("Content-Encoding", "zstd")
        .header("X-Digest-SizeBytes", content.len().to_string())
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let head = client.head(&cas).send().await.unwrap();
    assert_eq!(
        head.headers()["content-length"],
        content.len().to_string().as_str()
    );
    let plain = client
        .get(&cas)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&plain[..], &content[..]);
    let zstd_body = client
        .get(&cas)
        .header("Accept-Encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(zstd_body.headers()["content-encoding"], "zstd");
    let decoded = zstd::decode_all(&zstd_body.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(decoded, content);

    // The empty blob always exists.
    let empty = server.url(&format!("/cas/{}", sha256_hex(b"")));
    assert_eq!(
        client.get(&empty).send().await.unwrap().status(),
        StatusCode::OK
    );

    // AC entries are replaced.
    let ac = server.url(&format!("/ac/{}", "ab".repeat(32)));
    for value in ["first result", "second result"] {
        let put = client.put(&ac).body(value).send().await.unwrap();
        assert!(put.status().is_success());
    }
    assert_eq!(
        client.get(&ac).send().await.unwrap().text().await.unwrap(),
        "second result"
    );

    // --digest_function=blake3: the CAS is the native one.
    let digest = cache_proto::Digest::of(b"shared");
    let put = client
        .put(server.url(&format!("/blake3/cas/{digest}")))
        .body("shared")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let native = client
        .get(server.url(&format!("/v1/cas/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(native.text().await.unwrap(), "shared");

    // Bad digests are 404 routes, never I/O.
    for bad in [
        "/cas/ABC",
        "/cas/../../etc/passwd",
        &format!("/ac/{}", "g".repeat(64)),
    ] {
        let status = client.get(server.url(bad)).send().await.unwrap().status();
        assert!(status.is_client_error(), "{bad}: {status}");
    }
    let counters = &stats(&server).await["protocols"]["bazel"];
    assert!(counters["hits"].as_u64().unwrap() >= 4, "{counters}");
    assert_eq!(counters["misses"], 2, "{counters}");
    assert_eq!(counters["rejected"], 1, "{counters}");
}

#[tokio::test]
async fn turborepo_artifacts_keep_duration_and_tag_per_team() {
    let server = CacheServer::local();
    let client = &server.client;
    let status = server.get_json("/v8/artifacts/status", None).await;
    assert_eq!(status["status"], "enabled");
    let url = server.url("/v8/artifacts/a1b2c3d4e5f60718?teamId=team_acme");
    let put = client
        .put(&url)
        .bearer_auth("anything")
        .header("x-artifact-duration", "1234")
        .header("x-artifact-tag", "c2lnbmF0dXJl")
        .header("x-artifact-client-ci", "github")
        .body("tar.gz bytes")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let urls: serde_json::Value = put.json().await.unwrap();
    assert!(urls["urls"].is_array());
    let get = client.get(&url).send().await.unwrap();
    assert_eq!(get.headers()["x-artifact-duration"], "1234");
    assert_eq!(get.headers()["x-artifact-tag"], "c2lnbmF0dXJl");
    assert_eq!(get.text().await.unwrap(), "tar.gz bytes");
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    // Another team does not see it.
    let other = server.url("/v8/artifacts/a1b2c3d4e5f60718?slug=other");
    assert_eq!(
        client.get(&other).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Batch query.
    let query: serde_json::Value = client
        .post(server.url("/v8/artifacts?teamId=team_acme"))
        .body(r#"{"hashes":["a1b2c3d4e5f60718","ffff"]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(query["a1b2c3d4e5f60718"]["taskDurationMs"], 1234);
    assert_eq!(query["a1b2c3d4e5f60718"]["size"], 12);
    assert!(query["ffff"].is_null());
    let events = client
        .post(server.url("/v8/artifacts/events"))
        .body(r#"[{"source":"REMOTE","event":"HIT","hash":"a1b2"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let bad = client
        .get(server.url("/v8/artifacts/..%2f..%2fx"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stats(&server).await["protocols"]["turbo"]["writes"], 1);
}

/// The status of `PUT url` with `body`.
async fn put_status(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> StatusCode {
    client.put(url).body(body).send().await.unwrap().status()
}

/// The status of `method url`.
async fn status(client: &reqwest::Client, method: reqwest::Method, url: &str) -> StatusCode {
    client.request(method, url).send().await.unwrap().status()
}

/// The body of `GET url` (with `accept`, if any) as text.
async fn text(client: &reqwest::Client, url: &str, accept: Option<&str>) -> String {
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    request.send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn ccache_layouts_share_entries_and_gradle_and_nx_follow_their_rules() {
    use reqwest::Method;
    let server = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&["--max-blob-size", "1KiB"]),
    );
    let client = &server.client;
    let key = "0123456789abcdef0123456789abcdef01234567";
    let subdirs = server.url(&format!("/ccache/{}/{}", &key[..2], &key[2..]));
    let flat = server.url(&format!("/ccache/{key}"));
    assert_eq!(
        status(client, Method::GET, &subdirs).await,
        StatusCode::NOT_FOUND
    );
    assert!(put_status(client, &subdirs, "object").await.is_success());
    assert_eq!(text(client, &flat, None).await, "object");
    assert!(put_status(client, &flat, "newer").await.is_success());
    assert_eq!(text(client, &subdirs, None).await, "newer");
    assert_eq!(
        status(client, Method::DELETE, &flat).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(client, Method::HEAD, &subdirs).await,
        StatusCode::NOT_FOUND
    );

    // Gradle: 2xx store, 413 for oversize (which keeps its cache on).
    let gradle = server.url("/cache/9a0364b9e99bb480dd25e1f0284c8555");
    let accept = "application/vnd.gradle.build-cache-artifact.v2, */*";
    assert!(put_status(client, &gradle, "entry").await.is_success());
    assert_eq!(text(client, &gradle, Some(accept)).await, "entry");
    assert_eq!(
        put_status(client, &gradle, vec![0u8; 4096]).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        text(client, &gradle, None).await,
        "entry",
        "a refused entry left the old one in place"
    );

    // Nx: 200 on store, 409 when it exists.
    let nx = server.url("/v1/cache/8301924458432154627");
    assert_eq!(
        status(client, Method::GET, &nx).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(put_status(client, &nx, "outputs").await, StatusCode::OK);
    assert_eq!(put_status(client, &nx, "other").await, StatusCode::CONFLICT);
    assert_eq!(text(client, &nx, None).await, "outputs");

    // Keys that are not opaque keys are refused before any I/O.
    for bad in [
        "/cache/.hidden",
        "/v1/cache/a%00b",
        "/ccache/a%2Fb",
        "/cache/caf%C3%A9",
    ] {
        let got = status(client, Method::GET, &server.url(bad)).await;
        assert_eq!(got, StatusCode::BAD_REQUEST, "{bad}");
    }
    let protocols = &stats(&server).await["protocols"];
    for (name, writes) in [("ccache", 2), ("gradle", 1), ("nx", 1)] {
        assert_eq!(protocols[name]["writes"], writes, "{name}: {protocols}");
    }
    assert_eq!(protocols["gradle"]["rejected"], 1);
    assert_eq!(protocols["nx"]["rejected"], 1);
}

#[test]
fn real_ccache_gets_a_remote_hit_and_a_read_only_token_stores_nothing() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let writer = server.create_token("write", "ci", &[]);
    let reader = server.create_token("read", "laptop", &[]);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("add.c"),
        "int add(int a, int b) { return a + b; }\n",
    )
    .unwrap();
    let remote = |token: &str| {
        server
            .base_url()
            .replacen("http://", &format!("http://ci:{token}@"), 1)
            + "/ccache"
    };
    let compile = |dir: &Path, remote: &str, out: &str| {
        let output = ccache(dir, work.path(), remote, &["gcc", "-c", "add.c", "-o", out]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let first = work.path().join("cache-1");
    compile(&first, &remote(&writer), "first.o");
    assert_eq!(
        ccache_stat(&first, work.path(), &remote(&writer), "remote_storage_miss"),
        1
    );
    assert!(
        ccache_stat(
            &first,
            work.path(),
            &remote(&writer),
            "remote_storage_write"
        ) > 0
    );

    // An empty local cache: the result comes from the server.
    let second = work.path().join("cache-2");
    compile(&second, &remote(&writer), "second.o");
    assert_eq!(
        ccache_stat(&second, work.path(), &remote(&writer), "remote_storage_hit"),
        1
    );
    assert_eq!(
        std::fs::read(work.path().join("first.o")).unwrap(),
        std::fs::read(work.path().join("second.o")).unwrap()
    );

    // A read-only token: another file compiles fine, nothing is stored.
    let stored_before = server_writes(&server, "ccache");
    std::fs::write(
        work.path().join("add.c"),
        "int add(int a, int b) { return b + a; }\n",
    )
    .unwrap();
    let third = work.path().join("cache-3");
    compile(&third, &remote(&reader), "third.o");
    assert_eq!(
        ccache_stat(&third, work.path(), &remote(&reader), "remote_storage_miss"),
        1
    );
    assert_eq!(server_writes(&server, "ccache"), stored_before);
    assert!(!server.logs().contains(&writer) && !server.logs().contains(&reader));
}

/// Stored writes of `protocol`, read with an admin token made for the purpose.
fn server_writes(server: &CacheServer, protocol: &str) -> u64 {
    let admin = server.create_token("admin", "stats", &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stats = runtime.block_on(server.get_json("/v1/stats", Some(&admin)));
    stats["protocols"][protocol]["writes"].as_u64().unwrap()
}

#[test]
fn real_turbo_restores_outputs_from_the_server_and_survives_a_wrong_token() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let token = server.create_token("write", "ci", &[]);
    let work = tempfile::tempdir().unwrap();
    let root = &work.path().join("ws");
    std::fs::create_dir_all(root).unwrap();
    turbo_workspace(root);

    let (ok, first) = turbo(root, &server.base_url(), &token);
    assert!(ok, "{first}");
    assert!(first.contains("0 cached, 2 total"), "{first}");

    // Wipe the local cache, the outputs and turbo's logs (no git here, so
    // every file of a package is an input): outputs come back from the server.
    for path in [local_cache(root), root.join(".turbo")] {
        let _ = std::fs::remove_dir_all(path);
    }
    for name in ["a", "b"] {
        let package = root.join("packages").join(name);
        std::fs::remove_dir_all(package.join("dist")).unwrap();
        let _ = std::fs::remove_dir_all(package.join(".turbo"));
    }
    let (ok, second) = turbo(root, &server.base_url(), &token);
    assert!(ok, "{second}");
    assert!(second.contains("2 cached, 2 total"), "{second}");
    assert_eq!(
        std::fs::read_to_string(root.join("packages/a/dist/out.txt")).unwrap(),
        "built a"
    );

    // A wrong token: turbo says so, the build still succeeds.
    std::fs::write(root.join("packages/b/extra.txt"), "changed input").unwrap();
    let (ok, wrong) = turbo(root, &server.base_url(), "cct_not-a-token");
    assert!(ok, "{wrong}");
    let lowered = wrong.to_lowercase();
    assert!(
        lowered.contains("authentication failed") || lowered.contains("401"),
        "turbo did not report the auth failure: {wrong}"
    );
    assert!(!server.logs().contains(&token));
}

#[test]
fn real_nx_restores_outputs_from_the_self_hosted_cache() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let token = server.create_token("write", "ci", &[]);
    let work = tempfile::tempdir().unwrap();
    let root = &work.path().join("ws");
    nx_workspace(root);

    let (ok, first) = nx(
        root,
        &server.base_url(),
        &token,
        &work.path().join("local-1"),
    );
    assert!(ok, "{first}");
    assert_eq!(server_writes(&server, "nx"), 1, "{first}");

    // A new local cache and no outputs: Nx takes them from the server.
    std::fs::remove_dir_all(root.join("app/dist")).unwrap();
    let _ = std::fs::remove_dir_all(root.join(".nx"));
    let (ok, second) = nx(
        root,
        &server.base_url(),
        &token,
        &work.path().join("local-2"),
    );
    assert!(ok, "{second}");
    assert!(second.contains("from the cache"), "{second}");
    assert_eq!(
        std::fs::read_to_string(root.join("app/dist/out.txt")).unwrap(),
        "built"
    );
    assert!(!server.logs().contains(&token));
}
