//! `Range` headers: never a panic, and a range that resolves always lies
//! inside the representation and is not empty.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use cache_server::http::request::range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, value);
    let Some(spec) = range(&headers) else {
        return;
    };
    for size in [0u64, 1, 2, 10, 1 << 20, u64::MAX - 1, u64::MAX] {
        if let Some(resolved) = spec.resolve(size) {
            assert!(
                resolved.start < resolved.end,
                "{spec:?} in {size}: {resolved:?}"
            );
            assert!(resolved.end <= size, "{spec:?} in {size}: {resolved:?}");
        }
    }
});
