//! Quotas per namespace through the whole router: a pull request filling
//! its quota evicts its own least-recently-used objects, never main's, and
//! never a blob main relies on.

use super::*;
use cache_proto::NamespacePattern;

/// A pull request's quota in these tests: room for four 2,000-byte entries.
const PR_QUOTA: u64 = 9_000;
const ENTRY: usize = 2_000;

/// `ENTRY` incompressible bytes derived from `seed`.
fn bytes_of(seed: &str) -> Vec<u8> {
    let mut out = vec![0u8; ENTRY];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

fn quota_fixture() -> Fixture {
    fixture_with(StorageLocation::Memory, |state| {
        state.with_namespace_quotas(vec![(NamespacePattern::parse("pr-*").unwrap(), PR_QUOTA)])
    })
}

async fn put(fixture: &Fixture, path: &str, body: Vec<u8>) -> StatusCode {
    fixture.send(request("PUT", path, body)).await.0
}

async fn present(fixture: &Fixture, path: &str) -> bool {
    let (status, _, _) = fixture.send(request("GET", path, "")).await;
    status == StatusCode::OK
}

async fn stats(fixture: &Fixture) -> cache_proto::body::Stats {
    let (status, _, body) = fixture.send(request("GET", "/v1/stats", "")).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

/// Distinct last-access times, so that the eviction order is the order of
/// the writes.
async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

#[tokio::test]
async fn a_pull_request_filling_its_quota_evicts_only_its_own_entries() {
    let fixture = quota_fixture();
    for i in 0..8 {
        let path = format!("/ns/main/cache/a{i}");
        assert!(put(&fixture, &path, bytes_of(&path)).await.is_success());
        tick().await;
    }
    for i in 0..12 {
        let path = format!("/ns/pr-42/cache/b{i}");
        assert!(put(&fixture, &path, bytes_of(&path)).await.is_success());
        tick().await;
    }
    // Main's eight entries, 16,000 bytes, are all there.
    for i in 0..8 {
        assert!(
            present(&fixture, &format!("/ns/main/cache/a{i}")).await,
            "main a{i}"
        );
    }
    // The pull request kept its newest four and lost its oldest.
    for i in 0..8 {
        assert!(
            !present(&fixture, &format!("/ns/pr-42/cache/b{i}")).await,
            "pr b{i} kept"
        );
    }
    for i in 8..12 {
        assert!(
            present(&fixture, &format!("/ns/pr-42/cache/b{i}")).await,
            "pr b{i} lost"
        );
    }
    // Another pull request has a quota of its own: filling it takes
    // nothing from pr-42.
    for i in 0..6 {
        let path = format!("/ns/pr-43/cache/c{i}");
        assert!(put(&fixture, &path, bytes_of(&path)).await.is_success());
        tick().await;
    }
    for i in 8..12 {
        assert!(
            present(&fixture, &format!("/ns/pr-42/cache/b{i}")).await,
            "pr-42 b{i}"
        );
    }
    let stats = stats(&fixture).await;
    let of = |name: &str| {
        stats
            .namespaces
            .iter()
            .find(|usage| usage.namespace == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {:?}", stats.namespaces))
    };
    for pr in ["pr-42", "pr-43"] {
        let usage = of(pr);
        assert_eq!(usage.quota_bytes, Some(PR_QUOTA), "{pr}");
        assert!(usage.stored_bytes <= PR_QUOTA, "{pr}: {usage:?}");
        assert_eq!(usage.objects, 4, "{pr}: {usage:?}");
    }
    let main = of("main");
    assert_eq!((main.objects, main.quota_bytes), (8, None));
    assert!(main.stored_bytes >= 8 * ENTRY as u64);
}

#[tokio::test]
async fn blobs_are_charged_to_their_first_writer_and_main_s_are_never_evicted_by_a_pull_request() {
    let fixture = quota_fixture();
    // The pull request stores two blobs first; main then finds one present
    // (and so will rely on it without uploading it) and stores the other
    // again: both become main's.
    let [kept, stored_again, own] = ["kept", "again", "own"].map(bytes_of);
    for content in [&kept, &stored_again, &own] {
        let path = format!("/ns/pr-42{}", routes::cas(&Digest::of(content)));
        assert!(put(&fixture, &path, content.clone()).await.is_success());
        tick().await;
    }
    let missing = serde_json::json!({ "digests": [Digest::of(&kept)] }).to_string();
    let (status, _, body) = fixture
        .send(request("POST", "/ns/main/v1/cas/missing", missing))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("\"missing\":[]"));
    let path = format!("/ns/main{}", routes::cas(&Digest::of(&stored_again)));
    assert!(
        put(&fixture, &path, stored_again.clone())
            .await
            .is_success()
    );
    // The pull request fills its quota.
    for i in 0..6 {
        let path = format!("/ns/pr-42/cache/b{i}");
        assert!(put(&fixture, &path, bytes_of(&path)).await.is_success());
        tick().await;
    }
    for (what, content) in [("found present", &kept), ("stored again", &stored_again)] {
        let path = routes::cas(&Digest::of(content));
        assert!(
            present(&fixture, &path).await,
            "main's blob ({what}) evicted"
        );
    }
    assert!(
        !present(&fixture, &routes::cas(&Digest::of(&own))).await,
        "the pull request's own oldest blob is evicted first"
    );
}

#[tokio::test]
async fn an_upload_larger_than_its_namespace_quota_is_refused_and_main_is_not_limited() {
    let fixture = quota_fixture();
    let big = vec![7u8; PR_QUOTA as usize + 1];
    let (status, _, _) = fixture
        .send(
            Request::builder()
                .method("PUT")
                .uri("/ns/pr-42/cache/big")
                .header(header::CONTENT_LENGTH, big.len())
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!present(&fixture, "/ns/pr-42/cache/big").await);
    assert!(put(&fixture, "/ns/main/cache/big", big).await.is_success());
}
