//! Every route of the server, native and compatible, with arbitrary
//! methods, paths, headers and bodies, over in-memory storage: no panic,
//! and never a 500 (a 500 means a request got past parsing into a state
//! the server did not expect).
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use cache_server::http::app;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[path = "shared/fixture.rs"]
mod shared;

fn fixture() -> &'static shared::Fixture<cache_server::http::App> {
    static FIXTURE: OnceLock<shared::Fixture<cache_server::http::App>> = OnceLock::new();
    shared::fixture(&FIXTURE, app)
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"];
const PREFIXES: [&str; 12] = [
    "/v1/cas/",
    "/v1/cas/missing",
    "/v1/ac/",
    "/v1/leases/",
    "/v8/artifacts/",
    "/v8/artifacts",
    "/v1/cache/",
    "/cache/",
    "/ccache/",
    "/bazel/cas/",
    "/bazel/blake3/ac/",
    "/v1/events",
];
const HEADERS: [&str; 6] = [
    "content-encoding",
    "range",
    "if-match",
    "if-none-match",
    "accept-encoding",
    "x-artifact-duration",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let method = METHODS[data[0] as usize % METHODS.len()];
    let prefix = PREFIXES[data[1] as usize % PREFIXES.len()];
    let header = HEADERS[data[2] as usize % HEADERS.len()];
    let rest = &data[3..];
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (path_part, tail) = rest.split_at(split);
    let tail = tail.get(1..).unwrap_or_default();
    let split = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
    let (header_value, body) = tail.split_at(split);
    let Ok(path) = std::str::from_utf8(path_part) else {
        return;
    };
    let uri = format!("{prefix}{path}");
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(uri);
    if let Ok(value) = axum::http::HeaderValue::from_bytes(header_value) {
        request = request.header(header, value);
    }
    let Ok(request) = request.body(Body::from(body.get(1..).unwrap_or_default().to_vec())) else {
        return;
    };
    let fixture = fixture();
    let response = fixture
        .runtime
        .block_on(fixture.service.clone().oneshot(request))
        .expect("the router is infallible");
    assert_ne!(
        response.status().as_u16(),
        500,
        "{method} {prefix}{path} with {header}: {:?}",
        String::from_utf8_lossy(header_value)
    );
});
