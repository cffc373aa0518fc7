//! The native v1 API end to end: a real `cache-server` process over HTTP,
//! each scenario run against the local-folder backend and against a real
//! S3-compatible server (`s3s-fs`).

use std::time::{Duration, Instant};

use cache_proto::body::{ErrorBody, MissingRequest, MissingResponse};
use cache_proto::{Digest, routes};
use cachectl_e2e::data::{compressible_bytes, digest, files_under, random_bytes};
use cachectl_e2e::{Backend, CacheServer, S3Server, ServerOptions};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, RANGE};

const MIB: usize = 1024 * 1024;

/// Runs each scenario once over a local folder and once over S3.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    let mut server = cachectl_e2e::CacheServer::local();
                    super::$scenario(&mut server).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    let s3 = cachectl_e2e::S3Server::start();
                    let backend = cachectl_e2e::Backend::s3(&s3, "team/ci");
                    let mut server = cachectl_e2e::CacheServer::start(backend, Default::default());
                    super::$scenario(&mut server).await;
                }
            )*
        }
    };
}

on_both_backends!(
    round_trips_empty_small_and_large_blobs,
    round_trips_a_256_mib_blob,
    wrong_digest_is_rejected_and_nothing_is_stored,
    re_put_is_idempotent_and_does_not_rewrite,
    concurrent_puts_of_one_digest_all_succeed,
    zstd_upload_and_download_are_byte_exact,
    ranges_are_served_from_raw_and_compressed_blobs,
    missing_lists_only_absent_digests,
    action_cache_overwrites_conditions_and_deletes,
    invalid_identifiers_are_400,
    everything_survives_a_restart,
    reindex_rebuilds_a_lost_index,
);

/// GETs a blob, hashing the body as it streams; returns status, digest, length.
async fn get_digest(server: &CacheServer, digest: &Digest) -> (StatusCode, Digest, u64) {
    let response = server
        .client
        .get(server.url(&routes::cas(digest)))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let mut hasher = blake3::Hasher::new();
    let mut length = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (status, Digest::from(hasher.finalize()), length)
}

async fn get_bytes(server: &CacheServer, path: &str) -> (StatusCode, Vec<u8>) {
    let response = server.client.get(server.url(path)).send().await.unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

fn index_rows(server: &CacheServer, name: &Digest) -> i64 {
    let connection = rusqlite::Connection::open(server.index_path()).unwrap();
    connection
        .query_row(
            "SELECT COUNT(*) FROM objects WHERE name = ?1",
            [name.to_string()],
            |row| row.get(0),
        )
        .unwrap()
}

async fn round_trips_empty_small_and_large_blobs(server: &mut CacheServer) {
    let blobs = [
        Vec::new(),
        vec![42u8],
        random_bytes(MIB, 1),
        compressible_bytes(MIB),
        random_bytes(9 * MIB + 17, 2),
    ];
    for content in blobs {
        let d = digest(&content);
        assert_eq!(
            server.put_blob(&content.clone()).await,
            StatusCode::CREATED,
            "{} bytes",
            content.len()
        );
        let head = server
            .client
            .head(server.url(&routes::cas(&d)))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()[CONTENT_LENGTH],
            content.len().to_string().as_str()
        );
        let (status, body) = get_bytes(server, &routes::cas(&d)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body == content,
            "{} bytes came back different",
            content.len()
        );
    }
}

async fn round_trips_a_256_mib_blob(server: &mut CacheServer) {
    let content = random_bytes(256 * MIB, 3);
    let d = digest(&content);
    assert_eq!(server.put_blob(&content).await, StatusCode::CREATED);
    let (status, got, length) = get_digest(server, &d).await;
    assert_eq!((status, got, length), (StatusCode::OK, d, 256 * MIB as u64));
}

async fn wrong_digest_is_rejected_and_nothing_is_stored(server: &mut CacheServer) {
    for content in [
        b"short".to_vec(),
        random_bytes(12 * MIB, 4),
        compressible_bytes(12 * MIB),
    ] {
        let claimed = digest(b"something else");
        let response = server
            .client
            .put(server.url(&routes::cas(&claimed)))
            .body(content.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.code, "digest_mismatch");
        assert_eq!(error.error.expected, Some(claimed.to_string()));
        assert_eq!(error.error.actual, Some(digest(&content).to_string()));

        let (status, _) = get_bytes(server, &routes::cas(&claimed)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(index_rows(server, &claimed), 0, "the index has a row");
        assert!(
            !server.stored_blob_file(&claimed).exists(),
            "storage has the object"
        );
    }
    let leftovers: Vec<_> = files_under(&server.objects_root().join("cas"));
    assert!(
        leftovers.is_empty(),
        "partial objects left in storage: {leftovers:?}"
    );
}

async fn re_put_is_idempotent_and_does_not_rewrite(server: &mut CacheServer) {
    let content = random_bytes(3 * MIB, 5);
    let d = digest(&content);
    assert_eq!(server.put_blob(&content.clone()).await, StatusCode::CREATED);
    let file = server.stored_blob_file(&d);
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.put_blob(&content.clone()).await, StatusCode::OK);
    let after = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(before, after, "the blob was rewritten");
    let (_, got, _) = get_digest(server, &d).await;
    assert_eq!(got, d);
}

async fn concurrent_puts_of_one_digest_all_succeed(server: &mut CacheServer) {
    for content in [random_bytes(12 * MIB, 6), compressible_bytes(2 * MIB)] {
        let d = digest(&content);
        let uploads = (0..16).map(|_| {
            let client = server.client.clone();
            let url = server.url(&routes::cas(&d));
            let body = content.clone();
            tokio::spawn(async move { client.put(url).body(body).send().await.unwrap().status() })
        });
        for status in futures::future::join_all(uploads).await {
            let status = status.unwrap();
            assert!(
                status == StatusCode::CREATED || status == StatusCode::OK,
                "{status}"
            );
        }
        let (status, got, length) = get_digest(server, &d).await;
        assert_eq!(
            (status, got, length),
            (StatusCode::OK, d, content.len() as u64)
        );
        assert_eq!(index_rows(server, &d), 1);
    }
}

async fn zstd_upload_and_download_are_byte_exact(server: &mut CacheServer) {
    let content = compressible_bytes(3 * MIB + 123);
    let d = digest(&content);
    let compressed = zstd::encode_all(&content[..], 9).unwrap();
    let response = server
        .client
        .put(server.url(&routes::cas(&d)))
        .header(CONTENT_ENCODING, "zstd")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let stored = std::fs::metadata(server.stored_blob_file(&d))
        .unwrap()
        .len();
    assert!(
        stored < content.len() as u64 / 4,
        "stored {stored} bytes: not compressed"
    );

    let response = server
        .client
        .get(server.url(&routes::cas(&d)))
        .header(ACCEPT_ENCODING, "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_ENCODING], "zstd");
    let wire = response.bytes().await.unwrap();
    assert_eq!(
        wire.len() as u64,
        stored,
        "zstd GET is not the stored frames"
    );
    assert!(zstd::decode_all(&wire[..]).unwrap() == content);

    let (status, plain) = get_bytes(server, &routes::cas(&d)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(plain == content);

    // Incompressible data is stored as is, and a zstd GET of it is plain.
    let noise = random_bytes(2 * MIB, 7);
    let noise_digest = digest(&noise);
    let response = server
        .client
        .put(server.url(&routes::cas(&noise_digest)))
        .header(CONTENT_ENCODING, "zstd")
        .body(zstd::encode_all(&noise[..], 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // Stored bare: the object is exactly the blob, so that the object
    // store (a presigned URL, a CDN) can serve it as it is.
    let stored = std::fs::read(server.stored_blob_file(&noise_digest)).unwrap();
    assert!(
        stored == noise,
        "incompressible blob should be stored as its own bytes"
    );
    let response = server
        .client
        .get(server.url(&routes::cas(&noise_digest)))
        .header(ACCEPT_ENCODING, "zstd")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get(CONTENT_ENCODING).is_none());
    assert!(response.bytes().await.unwrap() == noise);

    // Frames in the stored layout (1 MiB each, the last shorter; what
    // cachectl sends) are stored as sent, not compressed again: the object
    // is the 16-byte header, the client's frames, then the seek table.
    let layered = compressible_bytes(2 * MIB + 5);
    let layered_digest = digest(&layered);
    let frames: Vec<u8> = layered
        .chunks(MIB)
        .flat_map(|chunk| zstd::bulk::compress(chunk, 1).unwrap())
        .collect();
    let response = server
        .client
        .put(server.url(&routes::cas(&layered_digest)))
        .header(CONTENT_ENCODING, "zstd")
        .body(frames.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored = std::fs::read(server.stored_blob_file(&layered_digest)).unwrap();
    assert!(
        stored.len() > 16 + frames.len() && stored[16..16 + frames.len()] == frames[..],
        "the client's frames were not stored as sent"
    );
    let (status, plain) = get_bytes(server, &routes::cas(&layered_digest)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(plain == layered);
    let part = server
        .client
        .get(server.url(&routes::cas(&layered_digest)))
        .header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", MIB - 10, MIB + 9),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert!(part.bytes().await.unwrap()[..] == layered[MIB - 10..MIB + 10]);

    // Content that starts like the storage header itself is stored behind
    // a header, so it is never mistaken for one, and reads back exact.
    let mut lookalike = vec![
        0x5B, 0x2A, 0x4D, 0x18, 8, 0, 0, 0, b'C', b'C', b'B', b'1', 1, 0, 0, 0,
    ];
    lookalike.extend(random_bytes(100_000, 8));
    let lookalike_digest = digest(&lookalike);
    let response = server
        .client
        .put(server.url(&routes::cas(&lookalike_digest)))
        .body(lookalike.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored = std::fs::metadata(server.stored_blob_file(&lookalike_digest))
        .unwrap()
        .len();
    assert_eq!(stored, lookalike.len() as u64 + 16);
    let (status, read) = get_bytes(server, &routes::cas(&lookalike_digest)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(read == lookalike);
    let (_, second) = get_bytes(server, &routes::cas(&lookalike_digest)).await;
    assert!(second == lookalike, "the hot copy differs");
}

async fn ranges_are_served_from_raw_and_compressed_blobs(server: &mut CacheServer) {
    for content in [
        random_bytes(3 * MIB + 5, 8),
        compressible_bytes(3 * MIB + 5),
    ] {
        let d = digest(&content);
        server.put_blob(&content.clone()).await;
        let size = content.len();
        let cases = [
            ("bytes=0-0", 0..1),
            ("bytes=1048570-1048590", 1_048_570..1_048_591),
            ("bytes=1048576-", MIB..size),
            ("bytes=-10", size - 10..size),
            ("bytes=100-99999999", 100..size),
        ];
        for (header, expected) in cases {
            let response = server
                .client
                .get(server.url(&routes::cas(&d)))
                .header(RANGE, header)
                .header(ACCEPT_ENCODING, "zstd")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{header}");
            let content_range = format!("bytes {}-{}/{size}", expected.start, expected.end - 1);
            assert_eq!(response.headers()[CONTENT_RANGE], content_range.as_str());
            assert!(response.headers().get(CONTENT_ENCODING).is_none());
            let body = response.bytes().await.unwrap();
            assert!(body[..] == content[expected.clone()], "{header}");
        }
        let response = server
            .client
            .get(server.url(&routes::cas(&d)))
            .header(RANGE, format!("bytes={size}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            response.headers()[CONTENT_RANGE],
            format!("bytes */{size}").as_str()
        );
    }
}

async fn missing_lists_only_absent_digests(server: &mut CacheServer) {
    let present: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(1000 + i, 10 + i as u64))
        .collect();
    for content in &present {
        server.put_blob(&content.clone()).await;
    }
    let absent: Vec<Digest> = (0..2).map(|i| digest(&random_bytes(10, 100 + i))).collect();
    let request = MissingRequest {
        digests: vec![
            absent[0],
            digest(&present[0]),
            absent[1],
            digest(&present[2]),
            absent[0],
        ],
    };
    let response = server
        .client
        .post(server.url(routes::CAS_MISSING))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let missing: MissingResponse = response.json().await.unwrap();
    assert_eq!(missing.missing, absent);

    let bad = server
        .client
        .post(server.url(routes::CAS_MISSING))
        .body(r#"{"digests": ["nothex"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

async fn action_cache_overwrites_conditions_and_deletes(server: &mut CacheServer) {
    let key = digest(b"action key").to_string();
    let url = server.url(&format!("/v1/ac/{key}"));
    let first = server
        .client
        .put(&url)
        .body(r#"{"image":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = server
        .client
        .put(&url)
        .body(r#"{"image":"b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let (status, body) = get_bytes(server, &format!("/v1/ac/{key}")).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &br#"{"image":"b"}"#[..])
    );

    let conflict = server
        .client
        .put(&url)
        .header("If-None-Match", "*")
        .body("c")
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::PRECONDITION_FAILED);
    let head = server.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[CONTENT_LENGTH], "13");

    let deleted = server.client.delete(&url).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        server.client.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let created = server
        .client
        .put(&url)
        .header("If-None-Match", "*")
        .body("d")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
}

async fn invalid_identifiers_are_400(server: &mut CacheServer) {
    let valid = digest(b"x").to_string();
    let invalid = [
        valid.to_uppercase(),
        valid[..63].to_owned(),
        format!("{valid}0"),
        format!("..%2F{}", &valid[5..]),
        format!("%00{}", &valid[3..]),
    ];
    for bad in invalid {
        for path in [format!("/v1/cas/{bad}"), format!("/v1/ac/{bad}")] {
            let url = server.url(&path);
            let get = server.client.get(&url).send().await.unwrap();
            assert_eq!(get.status(), StatusCode::BAD_REQUEST, "GET {path}");
            let put = server.client.put(&url).body("x").send().await.unwrap();
            assert_eq!(put.status(), StatusCode::BAD_REQUEST, "PUT {path}");
        }
    }
    // A path with a literal traversal never reaches a handler.
    let traversal = server
        .client
        .get(server.url("/v1/cas/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert!(traversal.status().is_client_error());
}

async fn everything_survives_a_restart(server: &mut CacheServer) {
    let blob = compressible_bytes(2 * MIB);
    let d = digest(&blob);
    server.put_blob(&blob.clone()).await;
    let key = digest(b"restart").to_string();
    server
        .client
        .put(server.url(&format!("/v1/ac/{key}")))
        .body("value")
        .send()
        .await
        .unwrap();
    server.restart();
    let (status, got, _) = get_digest(server, &d).await;
    assert_eq!((status, got), (StatusCode::OK, d));
    let (status, body) = get_bytes(server, &format!("/v1/ac/{key}")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"value"[..]));
    let stats = server.stats().await;
    assert_eq!((stats.stored.blobs, stats.stored.action_entries), (1, 1));
}

async fn reindex_rebuilds_a_lost_index(server: &mut CacheServer) {
    let blobs = [
        random_bytes(2 * MIB, 20),
        compressible_bytes(3 * MIB + 1),
        Vec::new(),
    ];
    for content in &blobs {
        server.put_blob(&content.clone()).await;
    }
    let key = digest(b"reindex").to_string();
    server
        .client
        .put(server.url(&format!("/v1/ac/{key}")))
        .body("v")
        .send()
        .await
        .unwrap();
    assert!(server.stop());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.index_path().display()));
    }
    let (ok, output) = server.run_subcommand("reindex");
    assert!(ok, "reindex failed:\n{output}");
    assert!(
        output.contains("reindexed 3 blobs, 1 action-cache entries"),
        "{output}"
    );
    server.start_again();
    for content in &blobs {
        let head = server
            .client
            .head(server.url(&routes::cas(&digest(content))))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()[CONTENT_LENGTH],
            content.len().to_string().as_str()
        );
        let (_, got, _) = get_digest(server, &digest(content)).await;
        assert_eq!(got, digest(content));
    }
    let head = server
        .client
        .head(server.url(&format!("/v1/ac/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_upload_is_413_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let options = ServerOptions {
        args: vec!["--max-blob-size".into(), "1MiB".into()],
        ..ServerOptions::default()
    };
    let server = CacheServer::start(Backend::Local, options);
    let claimed = digest(b"a large blob");
    // Only the head of a 10 GiB upload is sent: the answer must come without
    // the server waiting for (or reading) the body.
    let address = server.base_url().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        routes::cas(&claimed),
        10u64 << 30
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("no answer while the body is still pending")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!server.stored_blob_file(&claimed).exists());

    let exact = random_bytes(MIB, 31);
    assert_eq!(server.put_blob(&exact).await, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_outage_answers_503_within_the_timeout_then_recovers() {
    let mut s3 = S3Server::start();
    let options = ServerOptions {
        args: vec!["--storage-timeout".into(), "2".into()],
        ..ServerOptions::default()
    };
    let server = CacheServer::start(Backend::s3(&s3, "outage"), options);
    let content = random_bytes(2 * MIB, 40);
    let d = digest(&content);
    assert_eq!(server.put_blob(&content.clone()).await, StatusCode::CREATED);

    s3.stop();
    let started = Instant::now();
    let (status, _) = get_bytes(&server, &routes::cas(&d)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let other = random_bytes(1000, 41);
    assert_eq!(
        server.put_blob(&other.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let ready = server
        .client
        .get(server.url(routes::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let health = server
        .client
        .get(server.url(routes::HEALTHZ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    s3.restart();
    let ready = server
        .client
        .get(server.url(routes::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (status, got, _) = get_digest(&server, &d).await;
    assert_eq!((status, got), (StatusCode::OK, d));
    assert_eq!(server.put_blob(&other).await, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_and_metrics_count_hits_misses_and_bytes() {
    let server = CacheServer::local();
    let content = random_bytes(5000, 50);
    let d = digest(&content);
    assert_eq!(
        get_bytes(&server, &routes::cas(&d)).await.0,
        StatusCode::NOT_FOUND
    );
    server.put_blob(&content).await;
    assert_eq!(get_bytes(&server, &routes::cas(&d)).await.0, StatusCode::OK);
    let stats = server.stats().await;
    let cas = &stats.protocols["cas"];
    assert_eq!((cas.hits, cas.misses, cas.writes), (1, 1, 1));
    assert_eq!((cas.bytes_received, cas.bytes_served), (5000, 5000));
    assert_eq!((stats.stored.blobs, stats.stored.bytes), (1, 5000));
    let metrics = server
        .client
        .get(server.url(routes::METRICS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"cache_reads_total{protocol="cas",result="miss"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("cache_stored_bytes 5000"), "{metrics}");
}
