//! The gRPC services (REAPI cache and ByteStream) decoding arbitrary
//! request messages on every method, and ByteStream resource names parsed
//! from arbitrary text, over in-memory storage: no panic, and no
//! `INTERNAL` but for bytes that do not decode (a request that got past
//! decoding into a state the server did not expect).
#![no_main]

use std::sync::OnceLock;

use axum::http::{Request, header};
use cache_server::grpc::resource::{Kind, ResourceName};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[path = "shared/fixture.rs"]
mod shared;

fn fixture() -> &'static shared::Fixture<tonic::service::Routes> {
    static FIXTURE: OnceLock<shared::Fixture<tonic::service::Routes>> = OnceLock::new();
    shared::fixture(&FIXTURE, cache_server::grpc::routes)
}

const METHODS: [&str; 10] = [
    "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
    "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
    "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
    "/google.bytestream.ByteStream/Read",
    "/google.bytestream.ByteStream/Write",
    "/google.bytestream.ByteStream/QueryWriteStatus",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(message) {
        for kind in [Kind::Read, Kind::Write] {
            if let Ok(name) = ResourceName::parse(text, kind) {
                assert_eq!(name.hex.len(), 64);
            }
        }
    }
    let method = METHODS[selector as usize % METHODS.len()];
    // One length-prefixed gRPC message (or two, for the streaming Write).
    let mut body = Vec::with_capacity(message.len() + 10);
    let (first, second) = message.split_at(message.len() / 2);
    let parts: Vec<&[u8]> = if selector & 0x80 != 0 {
        vec![first, second]
    } else {
        vec![message]
    };
    for part in parts {
        body.push(0);
        body.extend_from_slice(&(part.len() as u32).to_be_bytes());
        body.extend_from_slice(part);
    }
    let request = Request::builder()
        .method("POST")
        .uri(method)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .expect("a request");
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let response = fixture
            .service
            .clone()
            .oneshot(request)
            .await
            .expect("the routes are infallible");
        let (parts, body) = response.into_parts();
        let collected = http_body_util::BodyExt::collect(body)
            .await
            .expect("a response body");
        let field = |name: &str| {
            collected
                .trailers()
                .and_then(|trailers| trailers.get(name))
                .or_else(|| parts.headers.get(name))
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        // Bytes that are not the message are INTERNAL by gRPC's own
        // convention (tonic, grpc-java and grpc-core alike); anything past
        // decoding must not be.
        let message = field("grpc-message");
        assert!(
            field("grpc-status") != "13" || message.starts_with("failed%20to%20decode"),
            "{method}: INTERNAL {message}"
        );
    });
});
