//! The object core ([`crate::cache::object`]) answered over HTTP: bodies
//! with their length, range and encoding headers, and request bodies fed
//! to it as byte streams.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::headers::ZSTD;
use futures::TryStreamExt;

use super::error::ApiError;
use crate::blob::StoredName;
use crate::cache::hot::Cached;
use crate::cache::object::{self as core, Content, Read};
pub use crate::cache::object::{
    DRAIN_REFUSED_UP_TO, IfExists, ReadOptions, WriteOptions, Written, claim, delete, get as open,
    lookup,
};
use crate::index::ObjectRecord;
use crate::metrics::Protocol;
use crate::state::AppState;

impl Written {
    /// 201 for a new object, else 200.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Created(_) => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

/// A plain `GET` answered from the hot cache, counting the hit; `None`
/// when not cached or not a plain read.
pub fn get_hot(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: ReadOptions,
) -> Option<(Arc<Cached>, Response)> {
    core::get_hot(state, name, protocol, options).map(|cached| {
        let response = small_response(cached.content.clone());
        (cached, response)
    })
}

/// The headers of every object body: type, length, ranges, vary.
fn content_headers(response: &mut Response, length: u64) {
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
}

fn small_response(content: bytes::Bytes) -> Response {
    let length = content.len() as u64;
    let mut response = Response::new(Body::from(content));
    content_headers(&mut response, length);
    response
}

/// A `HEAD` answer from the index: 200 with the object's length.
pub fn head(record: &ObjectRecord) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

fn header_value(text: String) -> HeaderValue {
    // Only ever built from digits and ASCII punctuation.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The response of an object the core opened (see [`open`]): the stored
/// zstd frames as they are for a zstd-accepting client
/// (`Content-Encoding: zstd`), a range (206, or 416), or the plain bytes.
pub fn respond(read: Read) -> Response {
    let opened = match read {
        Read::Unsatisfiable(size) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{size}")),
            );
            return response;
        }
        Read::Opened(opened) => opened,
    };
    let mut response = match opened.content {
        Content::Whole(content) => Response::new(Body::from(content)),
        Content::Stream(stream) => Response::new(Body::from_stream(stream)),
    };
    content_headers(&mut response, opened.length);
    if let Some((range, size)) = opened.range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {}-{}/{size}", range.start, range.end - 1)),
        );
    }
    if opened.zstd {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(ZSTD));
    }
    response
}

/// A request body as the byte stream the core reads.
pub fn stream(body: Body) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    body.into_data_stream().map_err(std::io::Error::other)
}

/// Stores the request body `body` as `name` (see [`core::put`]).
pub async fn put(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: WriteOptions,
    body: Body,
) -> Result<Written, ApiError> {
    Ok(core::put(state, name, protocol, options, stream(body)).await?)
}

/// Reads and drops a request body, up to `limit` bytes; whether it was
/// read to its end.
pub async fn discard(body: Body, limit: u64) -> bool {
    core::discard(stream(body), limit).await
}
