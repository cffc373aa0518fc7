//! Namespaces through the whole router: prefixes, the header, token
//! policies and read fallback, for the native API and every protocol.

use super::*;
use crate::auth::new_token;
use crate::index::Scope;
use crate::namespaces::NamespacePolicy;
use crate::replicated::TokenGrant;
use cache_proto::{Key, NamespacePattern};

const SHA_HEX: &str = "5a3f1b7c9e2d4f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a";

fn key(text: &str) -> Key {
    Key::from_bytes(*Digest::of(text.as_bytes()).as_bytes())
}

/// Every keyed protocol's path of one entry named `name`.
fn keyed_paths(name: &str) -> Vec<String> {
    let hex = key(name).to_string();
    vec![
        routes::ac(&key(name)),
        format!("/cache/{name}"),
        format!("/v1/cache/{name}"),
        format!("/v8/artifacts/{name}?teamId=team_a"),
        format!("/ccache/{}", &hex[..40]),
        format!("/ac/{hex}"),
        format!("/blake3/ac/{hex}"),
    ]
}

async fn status_body(fixture: &Fixture, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let (status, _, body) = fixture.send(request).await;
    (status, body)
}

fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    request
}

#[tokio::test]
async fn a_prefix_is_a_namespace_of_its_own_for_every_protocol() {
    let fixture = fixture();
    for path in keyed_paths("entry-1") {
        let (status, _) =
            status_body(&fixture, request("PUT", &format!("/ns/pr-1{path}"), "pr")).await;
        assert!(status.is_success(), "{path}: {status}");
        // Not in default, nor in another namespace.
        let (status, _) = status_body(&fixture, request("GET", &path, "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, _) =
            status_body(&fixture, request("GET", &format!("/ns/pr-2{path}"), "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, body) =
            status_body(&fixture, request("GET", &format!("/ns/pr-1{path}"), "")).await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, b"pr".as_slice()),
            "{path}"
        );
        // Without a prefix: the default namespace, as before namespaces.
        let (status, _) = status_body(&fixture, request("PUT", &path, "default")).await;
        assert!(status.is_success(), "{path}: {status}");
        let (_, body) = status_body(&fixture, request("GET", &path, "")).await;
        assert_eq!(body, b"default", "{path}");
        let (_, body) = status_body(&fixture, request("GET", &format!("/ns/pr-1{path}"), "")).await;
        assert_eq!(body, b"pr", "{path}");
    }
}

#[tokio::test]
async fn blobs_are_global_whatever_the_prefix() {
    let fixture = fixture();
    let digest = Digest::of(b"shared");
    let (status, _) = status_body(
        &fixture,
        request(
            "PUT",
            &format!("/ns/pr-1{}", routes::cas(&digest)),
            "shared",
        ),
    )
    .await;
    assert!(status.is_success());
    let (status, body) = status_body(&fixture, request("GET", &routes::cas(&digest), "")).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"shared".as_slice())
    );
    let (status, _) = status_body(
        &fixture,
        request("GET", &format!("/ns/main/cas/{SHA_HEX}"), ""),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reads_fall_back_along_the_chain_and_writes_stay_in_their_namespace() {
    let fixture = fixture_with(StorageLocation::Memory, |state| {
        state.with_fallbacks(crate::namespaces::FallbackChains::parse(["pr-*=main"]).unwrap())
    });
    for path in keyed_paths("warm") {
        let (status, _) = status_body(
            &fixture,
            request("PUT", &format!("/ns/main{path}"), "from main"),
        )
        .await;
        assert!(status.is_success(), "{path}: {status}");
        // A pull request starts warm from main's entries...
        let (status, body) =
            status_body(&fixture, request("GET", &format!("/ns/pr-9{path}"), "")).await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, b"from main".as_slice()),
            "{path}"
        );
        let (status, _) =
            status_body(&fixture, request("HEAD", &format!("/ns/pr-9{path}"), "")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        // ...while its own write lands in its own namespace only (Nx
        // refuses to replace, but the pull request's entry is new).
        let (status, _) = status_body(
            &fixture,
            request("PUT", &format!("/ns/pr-9{path}"), "from pr"),
        )
        .await;
        assert!(status.is_success(), "{path}: {status}");
        let (_, body) = status_body(&fixture, request("GET", &format!("/ns/pr-9{path}"), "")).await;
        assert_eq!(body, b"from pr", "{path}");
        let (_, body) = status_body(&fixture, request("GET", &format!("/ns/main{path}"), "")).await;
        assert_eq!(body, b"from main", "{path}");
        // Chains are not symmetric, and other namespaces have none.
        let (status, _) =
            status_body(&fixture, request("GET", &format!("/ns/other{path}"), "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // Turborepo's batch query follows the chain too.
    let (status, body) = status_body(
        &fixture,
        request(
            "POST",
            "/ns/pr-3/v8/artifacts?teamId=team_a",
            r#"{"hashes":["warm","cold"]}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        answer["warm"].is_object() && answer["cold"].is_null(),
        "{answer}"
    );
}

#[tokio::test]
async fn invalid_namespaces_are_400_before_any_io() {
    let fixture = fixture();
    for uri in ["/ns/../v1/ac/x", "/ns/-x/cache/k", "/ns/a%2Fb/cache/k"] {
        let (status, body) = status_body(&fixture, request("GET", uri, "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error.code, "invalid_namespace");
    }
    let mut bad_header = request("GET", "/cache/k", "");
    bad_header
        .headers_mut()
        .insert(cache_proto::namespace::HEADER, "a b".parse().unwrap());
    let (status, _) = status_body(&fixture, bad_header).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A server with auth required, pull requests falling back to main, and
/// three tokens: main's CI, pull request 42's CI and a fork's.
async fn trust_fixture() -> (Fixture, [String; 3]) {
    let folder = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageLocation::Memory, StorageOptions::default()).unwrap();
    let index = Index::open(&folder.path().join("index.sqlite")).unwrap();
    let upload = UploadSettings {
        max_size: 1024 * 1024,
        zstd_level: 3,
    };
    let state = AppState::new(storage, index, upload)
        .with_auth(AuthMode::Required)
        .with_fallbacks(crate::namespaces::FallbackChains::parse(["pr-*=main"]).unwrap());
    let patterns = |texts: &[&str]| -> Vec<NamespacePattern> {
        texts
            .iter()
            .map(|t| NamespacePattern::parse(t).unwrap())
            .collect()
    };
    let mut secrets = Vec::new();
    for (name, write, read) in [
        ("main-ci", patterns(&["main"]), patterns(&[])),
        ("pr-42-ci", patterns(&["pr-42"]), patterns(&["main"])),
        ("fork", patterns(&[]), patterns(&["main"])),
    ] {
        let token = new_token().unwrap();
        let grant = TokenGrant {
            name: Some(name.into()),
            scope: if write.is_empty() {
                Scope::Read
            } else {
                Scope::Write
            },
            expires_ms: None,
            namespaces: NamespacePolicy::from_lists(write, read, None),
        };
        state.tokens.issue(&token, grant).await.unwrap();
        secrets.push(token.secret);
    }
    let fixture = Fixture {
        router: app(state),
        _folder: folder,
    };
    (fixture, secrets.try_into().unwrap())
}

#[tokio::test]
async fn a_pull_request_token_cannot_write_main_but_reads_it() {
    let (fixture, [main, pr, fork]) = trust_fixture().await;
    for path in keyed_paths("creep") {
        // The pull request tries to plant its entry under main's key first.
        let (status, _) = status_body(
            &fixture,
            with_token(request("PUT", &format!("/ns/main{path}"), "evil"), &pr),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let mut by_header = with_token(request("PUT", &path, "evil"), &pr);
        by_header
            .headers_mut()
            .insert(cache_proto::namespace::HEADER, "main".parse().unwrap());
        let (status, _) = status_body(&fixture, by_header).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let (status, _) = status_body(
            &fixture,
            with_token(request("PUT", &format!("/ns/pr-43{path}"), "evil"), &pr),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        // Without a prefix its writes land in its own namespace.
        let (status, _) =
            status_body(&fixture, with_token(request("PUT", &path, "evil"), &pr)).await;
        assert!(status.is_success(), "{path}: {status}");
        // Main never sees it: its read misses and it builds.
        let (status, _) = status_body(&fixture, with_token(request("GET", &path, ""), &main)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, _) =
            status_body(&fixture, with_token(request("PUT", &path, "good"), &main)).await;
        assert!(status.is_success(), "{path}: {status}");
        let (_, body) = status_body(&fixture, with_token(request("GET", &path, ""), &main)).await;
        assert_eq!(body, b"good", "{path}");
        // The pull request still reads its own first...
        let (_, body) = status_body(&fixture, with_token(request("GET", &path, ""), &pr)).await;
        assert_eq!(body, b"evil", "{path}");
        // ...and the fork reads main, and may not write anywhere.
        let (_, body) = status_body(&fixture, with_token(request("GET", &path, ""), &fork)).await;
        assert_eq!(body, b"good", "{path}");
        let (status, _) =
            status_body(&fixture, with_token(request("PUT", &path, "x"), &fork)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        // Nor read namespaces outside its policy.
        let (status, _) = status_body(
            &fixture,
            with_token(request("GET", &format!("/ns/pr-42{path}"), ""), &fork),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // Main's fallback-free reads of a key only the pull request wrote miss.
    let (_, body) = status_body(
        &fixture,
        with_token(
            request(
                "GET",
                &format!("/ns/pr-42{}", routes::ac(&key("creep"))),
                "",
            ),
            &pr,
        ),
    )
    .await;
    assert_eq!(body, b"evil");
}

#[tokio::test]
async fn leases_are_per_namespace() {
    let fixture = fixture();
    let path = routes::lease(&key("build"));
    let body = r#"{"holder":"main-job","ttl_seconds":60}"#;
    let (status, _) =
        status_body(&fixture, request("POST", &format!("/ns/main{path}"), body)).await;
    assert_eq!(status, StatusCode::CREATED);
    // A pull request holding the same key does not make main wait, nor
    // the other way round.
    let body = r#"{"holder":"pr-job","ttl_seconds":60}"#;
    let (status, _) =
        status_body(&fixture, request("POST", &format!("/ns/pr-1{path}"), body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        status_body(&fixture, request("POST", &format!("/ns/main{path}"), body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
