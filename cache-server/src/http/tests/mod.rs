//! Handler tests through the whole router, in process, over the in-memory
//! store (the end-to-end suite covers real processes and real backends).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cache_proto::body::ErrorBody;
use cache_proto::{Digest, routes};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::auth::AuthMode;
use crate::blob::upload::UploadSettings;
use crate::index::Index;
use crate::storage::{Storage, StorageLocation, StorageOptions};

struct Fixture {
    router: App,
    _folder: tempfile::TempDir,
}

mod namespace_quotas;
mod namespaces;

fn fixture_over(location: StorageLocation) -> Fixture {
    fixture_with(location, |state| state)
}

/// A router over `location` whose state `configure` adjusts.
fn fixture_with(
    location: StorageLocation,
    configure: impl FnOnce(AppState) -> AppState,
) -> Fixture {
    let folder = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        timeout: std::time::Duration::from_secs(2),
        ..StorageOptions::default()
    };
    let storage = Storage::open(&location, options).unwrap();
    let index = Index::open(&folder.path().join("index.sqlite")).unwrap();
    let upload = UploadSettings {
        max_size: 1024 * 1024,
        zstd_level: 3,
    };
    Fixture {
        router: app(configure(AppState::new(storage, index, upload))),
        _folder: folder,
    }
}

fn fixture() -> Fixture {
    fixture_over(StorageLocation::Memory)
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }
}

fn request(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn mismatched_upload_names_both_digests_and_stores_nothing() {
    let fixture = fixture();
    let expected = Digest::of(b"right");
    let (status, _, body) = fixture
        .send(request("PUT", &routes::cas(&expected), "wrong"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error.code, "digest_mismatch");
    assert_eq!(error.error.expected, Some(expected.to_string()));
    assert_eq!(error.error.actual, Some(Digest::of(b"wrong").to_string()));
    let (status, _, _) = fixture
        .send(request("HEAD", &routes::cas(&expected), ""))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn declared_oversize_body_is_refused_with_413() {
    let fixture = fixture();
    let digest = Digest::of(b"x");
    let oversize = Request::builder()
        .method("PUT")
        .uri(routes::cas(&digest))
        .header(header::CONTENT_LENGTH, 2 * 1024 * 1024)
        .body(Body::from(vec![0u8; 2 * 1024 * 1024]))
        .unwrap();
    let (status, _, _) = fixture.send(oversize).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn undeclared_oversize_body_is_cut_off_with_413() {
    let fixture = fixture();
    let content = vec![7u8; 1024 * 1024 + 1];
    let digest = Digest::of(&content);
    let chunks = content
        .chunks(4096)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    let (status, _, _) = fixture
        .send(request("PUT", &routes::cas(&digest), streamed))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn zstd_bomb_is_cut_off_at_the_limit() {
    let fixture = fixture();
    let expanded = vec![0u8; 8 * 1024 * 1024];
    let bomb = zstd::bulk::compress(&expanded, 19).unwrap();
    assert!(bomb.len() < 4096);
    let upload = Request::builder()
        .method("PUT")
        .uri(routes::cas(&Digest::of(&expanded)))
        .header(header::CONTENT_ENCODING, "zstd")
        .body(Body::from(bomb))
        .unwrap();
    let (status, _, _) = fixture.send(upload).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn malformed_zstd_body_is_a_400() {
    let fixture = fixture();
    let upload = Request::builder()
        .method("PUT")
        .uri(routes::cas(&Digest::of(b"x")))
        .header(header::CONTENT_ENCODING, "zstd")
        .body(Body::from("definitely not zstd"))
        .unwrap();
    let (status, _, body) = fixture.send(upload).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn invalid_identifiers_are_refused_before_any_storage_io() {
    // A store that cannot be reached: any I/O would answer 503, not 400.
    let unreachable = StorageLocation::S3 {
        bucket: "nowhere".into(),
        prefix: String::new(),
    };
    let fixture = fixture_over(unreachable);
    for uri in [
        format!("/v1/cas/{}", "A".repeat(64)),
        format!("/v1/cas/{}", "a".repeat(63)),
        "/v1/cas/..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("/v1/ac/{}", "g".repeat(64)),
    ] {
        for method in ["GET", "HEAD", "PUT"] {
            let (status, _, _) = fixture.send(request(method, &uri, "x")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}");
        }
    }
}

#[tokio::test]
async fn unsupported_content_encoding_is_415() {
    let fixture = fixture();
    let upload = Request::builder()
        .method("PUT")
        .uri(routes::cas(&Digest::of(b"x")))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("x"))
        .unwrap();
    let (status, _, _) = fixture.send(upload).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn action_cache_compare_and_set() {
    let fixture = fixture();
    let uri = format!("/v1/ac/{}", "ab".repeat(32));
    let (status, headers, _) = fixture.send(request("PUT", &uri, "v1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let first_etag = headers[header::ETAG].to_str().unwrap().to_owned();

    let create_only = Request::builder()
        .method("PUT")
        .uri(&uri)
        .header(header::IF_NONE_MATCH, "*")
        .body(Body::from("v2"))
        .unwrap();
    assert_eq!(
        fixture.send(create_only).await.0,
        StatusCode::PRECONDITION_FAILED
    );

    let stale = Request::builder()
        .method("PUT")
        .uri(&uri)
        .header(header::IF_MATCH, "\"stale\"")
        .body(Body::from("v2"))
        .unwrap();
    assert_eq!(fixture.send(stale).await.0, StatusCode::PRECONDITION_FAILED);

    let fresh = Request::builder()
        .method("PUT")
        .uri(&uri)
        .header(header::IF_MATCH, &first_etag)
        .body(Body::from("v2"))
        .unwrap();
    assert_eq!(fixture.send(fresh).await.0, StatusCode::OK);

    let (status, headers, body) = fixture.send(request("GET", &uri, "")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"v2"[..]));
    assert_ne!(headers[header::ETAG].to_str().unwrap(), first_etag);

    assert_eq!(
        fixture.send(request("DELETE", &uri, "")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        fixture.send(request("DELETE", &uri, "")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fixture.send(request("GET", &uri, "")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn action_cache_value_over_one_mib_is_413() {
    let fixture = fixture();
    let uri = format!("/v1/ac/{}", "cd".repeat(32));
    let value = vec![1u8; 1024 * 1024 + 1];
    assert_eq!(
        fixture.send(request("PUT", &uri, value)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let fixture = fixture();
    let (status, _, body) = fixture.send(request("GET", "/v2/nothing", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error.code, "not_found");
}

#[tokio::test]
async fn wrong_method_answers_json_405() {
    let fixture = fixture();
    let (status, _, body) = fixture
        .send(request("POST", &routes::cas(&Digest::of(b"x")), ""))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error.code, "method_not_allowed");
}

#[tokio::test]
async fn leases_grant_one_holder_and_tell_the_others_who_until_when() {
    let fixture = fixture();
    let uri = format!("/v1/leases/{}", "ef".repeat(32));
    let ask = |holder: &str| {
        request(
            "POST",
            &uri,
            format!(r#"{{"holder":"{holder}","ttl_seconds":60}}"#),
        )
    };
    let (status, _, body) = fixture.send(ask("job-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let granted: cache_proto::body::Lease = serde_json::from_slice(&body).unwrap();
    assert_eq!(granted.holder, "job-1");
    let (status, _, body) = fixture.send(ask("job-2")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let held: cache_proto::body::Lease = serde_json::from_slice(&body).unwrap();
    assert_eq!(held, granted);
    let release = |holder: &str| request("DELETE", &format!("{uri}?holder={holder}"), "");
    assert_eq!(fixture.send(release("job-2")).await.0, StatusCode::CONFLICT);
    assert_eq!(
        fixture.send(release("job-1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        fixture.send(release("job-1")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(fixture.send(ask("job-2")).await.0, StatusCode::CREATED);
    let bad_ttl = request("POST", &uri, r#"{"holder":"x","ttl_seconds":0}"#);
    assert_eq!(fixture.send(bad_ttl).await.0, StatusCode::BAD_REQUEST);
}
