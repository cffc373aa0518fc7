//! Crash safety: `kill -9` of the cache server, or of the S3 server under
//! it, in the middle of large uploads at pseudo-random points, many times.
//! After each restart no partial object is visible (through the API or in
//! storage), the index and storage agree, and the upload goes through when
//! sent again.
//!
//! Rounds: 6 per backend by default; `CACHECTL_LONG_SUITE=1` (set by
//! `scripts/test --long`) runs 30.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use cache_proto::{Digest, routes};
use cachectl_e2e::data::{digest, files_under, random_bytes};
use cachectl_e2e::{Backend, CacheServer, S3Server, ServerOptions};
use futures::StreamExt;

const MIB: usize = 1024 * 1024;

fn rounds() -> u64 {
    if std::env::var_os("CACHECTL_LONG_SUITE").is_some() {
        30
    } else {
        6
    }
}

/// A delay in `0..max_ms` drawn from `seed` (the same on every run).
fn pseudo_random_ms(seed: u64, max_ms: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x % max_ms
}

/// Starts a PUT of `content` that trickles its body in 1 MiB chunks (so a
/// kill lands in the middle); the task ends however the upload ends.
fn start_upload(server: &CacheServer, content: Vec<u8>) -> tokio::task::JoinHandle<()> {
    let url = server.url(&routes::cas(&digest(&content)));
    // Its own connection, never pooled: the server may answer and close it
    // before the body is sent, and the test's next requests must not pick
    // up that dead connection from a shared pool.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let length = content.len();
    tokio::spawn(async move {
        let chunks: Vec<Bytes> = content.chunks(MIB).map(Bytes::copy_from_slice).collect();
        let stream = futures::stream::iter(chunks).then(|chunk| async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            Ok::<_, std::io::Error>(chunk)
        });
        let _ = client
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
    })
}

/// Digests the index lists as blobs.
fn indexed_blobs(server: &CacheServer) -> BTreeSet<String> {
    let connection = rusqlite::Connection::open(server.index_path()).expect("index opens");
    let mut statement = connection
        .prepare("SELECT name FROM objects WHERE kind = 'cas'")
        .expect("query");
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .expect("rows")
        .map(|row| row.expect("a name"))
        .collect()
}

/// Digests of the blob objects in storage; panics on any other file in the
/// blob area (a staged or partial write left visible).
fn stored_blobs(server: &CacheServer) -> BTreeSet<String> {
    let root = server.objects_root();
    files_under(&root.join("cas"))
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                Digest::parse(&name).is_ok(),
                "a file that is not a published blob is visible: {}",
                path.display()
            );
            name
        })
        .collect()
}

/// What a client sees of `name`: absent, or exactly `content`. Returns
/// whether it was absent.
async fn assert_absent_or_whole(server: &CacheServer, name: &Digest, content: &[u8]) -> bool {
    let url = server.url(&routes::cas(name));
    let head = server.client.head(&url).send().await.expect("HEAD");
    match head.status().as_u16() {
        404 => true,
        200 => {
            let body = server
                .client
                .get(&url)
                .send()
                .await
                .expect("GET")
                .bytes()
                .await
                .expect("body");
            assert_eq!(body.len(), content.len(), "a partial blob is served");
            assert_eq!(digest(&body), *name, "a corrupt blob is served");
            false
        }
        other => panic!("HEAD answered {other}"),
    }
}

/// No index row names a blob that storage lacks. (The reverse can hold for
/// an instant: a blob published just before the kill and not yet indexed
/// is invisible, reads as absent, and is indexed by its re-upload.)
fn assert_every_row_has_its_object(server: &CacheServer) {
    let stored = stored_blobs(server);
    let dangling: Vec<_> = indexed_blobs(server)
        .into_iter()
        .filter(|name| !stored.contains(name))
        .collect();
    assert!(
        dangling.is_empty(),
        "index rows without objects: {dangling:?}"
    );
}

/// The index rows and the stored objects name the same blobs.
fn assert_index_agrees_with_storage(server: &CacheServer) {
    assert_eq!(
        indexed_blobs(server),
        stored_blobs(server),
        "index and storage disagree"
    );
}

async fn put_verified(server: &CacheServer, content: &[u8]) {
    let name = digest(content);
    let response = server
        .client
        .put(server.url(&routes::cas(&name)))
        .body(content.to_vec())
        .send()
        .await
        .expect("PUT");
    assert!(
        response.status().is_success(),
        "re-upload answered {}",
        response.status()
    );
    assert_absent_or_whole(server, &name, content).await;
    let head = server
        .client
        .head(server.url(&routes::cas(&name)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

/// Kills the cache server during uploads, `rounds()` times, checking
/// everything after each restart.
async fn kill_cache_server_mid_upload(server: &mut CacheServer, seed: u64) {
    // One small blob stored before the crashes must survive all of them.
    let survivor = random_bytes(1000, seed);
    put_verified(server, &survivor).await;
    let mut cut_short = 0;
    for round in 0..rounds() {
        let content = random_bytes(24 * MIB + round as usize * 4099, seed * 100 + round);
        let name = digest(&content);
        let upload = start_upload(server, content.clone());
        let delay = 30 + pseudo_random_ms(seed * 1000 + round, 500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        upload.await.expect("the upload task ends");
        server.start_again();

        if assert_absent_or_whole(server, &name, &content).await {
            cut_short += 1;
        }
        assert_every_row_has_its_object(server);
        put_verified(server, &content).await;
        assert_index_agrees_with_storage(server);
        assert!(!assert_absent_or_whole(server, &digest(&survivor), &survivor).await);
    }
    assert!(
        cut_short * 2 >= rounds(),
        "only {cut_short} of {} kills landed mid-upload",
        rounds()
    );
    eprintln!("{cut_short} of {} kills landed mid-upload", rounds());
    let local_staged: Vec<_> = files_under(&server.objects_root())
        .into_iter()
        .filter(|path| path.to_string_lossy().contains('#'))
        .collect();
    assert!(
        local_staged.is_empty(),
        "writes cut short are left behind: {local_staged:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_server_mid_upload_exposes_nothing_partial_locally() {
    let mut server = CacheServer::start(Backend::Local, ServerOptions::default());
    kill_cache_server_mid_upload(&mut server, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_server_mid_upload_exposes_nothing_partial_on_s3() {
    let s3 = S3Server::start();
    let mut server = CacheServer::start(Backend::s3(&s3, "crash"), ServerOptions::default());
    kill_cache_server_mid_upload(&mut server, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_s3_server_mid_upload_fails_the_upload_cleanly() {
    let mut s3 = S3Server::start();
    let server = CacheServer::start(
        Backend::s3(&s3, "s3crash"),
        ServerOptions::args(&["--storage-timeout", "3"]),
    );
    let survivor = random_bytes(5000, 9);
    put_verified(&server, &survivor).await;
    let mut cut_short = 0;
    for round in 0..rounds() {
        let content = random_bytes(24 * MIB + round as usize * 31, 900 + round);
        let name = digest(&content);
        let upload = start_upload(&server, content.clone());
        let delay = 30 + pseudo_random_ms(7000 + round, 500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        s3.stop();
        upload.await.expect("the upload task ends");
        // While S3 is down the blob is unknown or answered 503, never partial.
        let head = server
            .client
            .head(server.url(&routes::cas(&name)))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("the cache server answers while S3 is down");
        assert!(
            matches!(head.status().as_u16(), 200 | 404 | 503),
            "{}",
            head.status()
        );
        s3.restart();

        if assert_absent_or_whole(&server, &name, &content).await {
            cut_short += 1;
        }
        assert_every_row_has_its_object(&server);
        put_verified(&server, &content).await;
        assert_index_agrees_with_storage(&server);
        assert!(!assert_absent_or_whole(&server, &digest(&survivor), &survivor).await);
    }
    assert!(
        cut_short * 2 >= rounds(),
        "only {cut_short} of {} kills landed mid-upload",
        rounds()
    );
    eprintln!("{cut_short} of {} S3 kills landed mid-upload", rounds());
}
