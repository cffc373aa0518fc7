//! `--max-size`: the store stays under its quota by evicting the least
//! recently used objects, on the local and the S3 backend alike; an object
//! being read is never evicted; a blob larger than the quota is 413, and a
//! write that cannot get room is 507.

use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::{Backend, CacheServer, S3Server, ServerOptions};
use futures::StreamExt;
use reqwest::StatusCode;

const KIB: usize = 1024;

async fn stored(server: &CacheServer) -> serde_json::Value {
    server.get_json("/v1/stats", None).await["stored"].clone()
}

/// Four 300 KiB blobs under a 1 MiB quota: the least recently used goes.
async fn least_recently_used_go_first(server: &CacheServer) {
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(300 * KIB, i)).collect();
    for blob in &blobs[..3] {
        assert_eq!(server.put_blob(blob).await, StatusCode::CREATED);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Blob 0 is read: now blob 1 is the least recently used.
    assert_eq!(server.get_blob(&digest(&blobs[0])).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(server.put_blob(&blobs[3]).await, StatusCode::CREATED);

    assert_eq!(
        server.get_blob(&digest(&blobs[1])).await.0,
        StatusCode::NOT_FOUND,
        "LRU kept"
    );
    for kept in [0, 2, 3] {
        assert_eq!(
            server.get_blob(&digest(&blobs[kept])).await.0,
            StatusCode::OK,
            "blob {kept}"
        );
    }
    let stored = stored(server).await;
    assert!(
        stored["stored_bytes"].as_u64().unwrap() <= 1024 * KIB as u64,
        "{stored}"
    );
    assert_eq!(stored["quota_bytes"], 1024 * KIB as u64);
    assert!(stored["evicted_objects"].as_u64().unwrap() >= 1, "{stored}");

    // One blob larger than the whole quota: 413, before its body is stored.
    let huge = random_bytes(1100 * KIB, 9);
    assert_eq!(server.put_blob(&huge).await, StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("cache_evicted_objects_total"), "{metrics}");
    assert!(
        metrics.contains(&format!("cache_quota_bytes {}", 1024 * KIB)),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_local_store_stays_under_its_quota_evicting_the_least_recently_used() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--max-size", "1MiB"]));
    least_recently_used_go_first(&server).await;
}

#[tokio::test]
async fn the_s3_store_stays_under_its_quota_evicting_the_least_recently_used() {
    let s3 = S3Server::start();
    let backend = Backend::s3(&s3, "quota");
    // One server owning its bucket: writes make room before they land, as
    // on a local folder. (Replicas sharing a bucket evict in the background
    // under an eviction lease: see the replicas suite.)
    let server = CacheServer::start(
        backend,
        ServerOptions::args(&["--max-size", "1MiB", "--index-authoritative"]),
    );
    least_recently_used_go_first(&server).await;
    // Evicted objects are gone from the bucket, not only from the index.
    let files = cachectl_e2e::data::files_under(&server.objects_root());
    let blob_files = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("/cas/"))
        .count();
    assert_eq!(blob_files, 3, "{files:?}");
}

#[tokio::test]
async fn an_object_being_read_is_never_evicted_and_a_write_without_room_is_507() {
    const MIB: usize = 1024 * KIB;
    let server = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&["--max-size", "48MiB"]),
    );
    let first = random_bytes(32 * MIB, 1);
    let second = random_bytes(32 * MIB, 2);
    assert_eq!(server.put_blob(&first).await, StatusCode::CREATED);

    // Start reading the first blob, slowly.
    let response = server
        .client
        .get(server.url(&format!("/v1/cas/{}", digest(&first))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut received = body.next().await.unwrap().unwrap().to_vec();

    // The second needs the first's room, which is being read: 507.
    assert_eq!(
        server.put_blob(&second).await,
        StatusCode::INSUFFICIENT_STORAGE
    );

    // The read completes, whole and correct.
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(digest(&received), digest(&first), "the read was cut short");

    // Now the first can go.
    assert_eq!(server.put_blob(&second).await, StatusCode::CREATED);
    assert_eq!(
        server.get_blob(&digest(&first)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get_blob(&digest(&second)).await.0, StatusCode::OK);
}
