//! `/v1/cas/{digest}` and `/v1/cas/missing`.

use std::io;
use std::sync::Arc;

use async_compression::tokio::bufread::ZstdDecoder;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::body::{MissingRequest, MissingResponse};
use cache_proto::{Digest, headers::ZSTD};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use super::AppState;
use super::error::ApiError;
use super::request::{self, BodyEncoding, RangeSpec};
use crate::blob::download::{self, BlobLayout, BodyStream};
use crate::blob::format::Encoding;
use crate::blob::{StoredName, cas_path, upload};
use crate::index::{NewObject, ObjectRecord};
use crate::metrics::{Metrics, Protocol, ReadResult, WriteResult};

/// Largest `missing` request body.
const MAX_MISSING_BODY: usize = 4 * 1024 * 1024;

/// A parsed `GET /v1/cas/{digest}`.
#[derive(Debug)]
struct BlobRead {
    digest: Digest,
    accept_zstd: bool,
    range: Option<RangeSpec>,
}

impl BlobRead {
    fn parse(raw: &str, headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(Self {
            digest: request::digest(raw)?,
            accept_zstd: request::accepts_zstd(headers),
            range: request::range(headers),
        })
    }
}

/// A parsed `PUT /v1/cas/{digest}`.
#[derive(Debug)]
struct BlobWrite {
    digest: Digest,
    encoding: BodyEncoding,
    declared_length: Option<u64>,
}

impl BlobWrite {
    fn parse(raw: &str, headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(Self {
            digest: request::digest(raw)?,
            encoding: request::body_encoding(headers)?,
            declared_length: request::content_length(headers)?,
        })
    }
}

fn layout(record: &ObjectRecord) -> BlobLayout {
    BlobLayout {
        size: record.size,
        stored_size: record.stored_size,
        encoding: record.encoding,
    }
}

async fn lookup(state: &AppState, digest: Digest) -> Result<Option<ObjectRecord>, ApiError> {
    let record = state.index.get(&StoredName::Blob(digest)).await?;
    let result = if record.is_some() {
        ReadResult::Hit
    } else {
        ReadResult::Miss
    };
    state.metrics.read(Protocol::Cas, result);
    Ok(record)
}

fn not_found(digest: &Digest) -> ApiError {
    ApiError::NotFound(format!("blob {digest} not found"))
}

/// `HEAD /v1/cas/{digest}`: answered from the index.
pub async fn head_blob(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let digest = request::digest(&raw)?;
    let record = lookup(&state, digest)
        .await?
        .ok_or_else(|| not_found(&digest))?;
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, etag(&digest));
    Ok(response)
}

/// `GET /v1/cas/{digest}`: streamed; zstd passthrough, decompressed, or a range.
pub async fn get_blob(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let read = BlobRead::parse(&raw, &headers)?;
    let record = lookup(&state, read.digest)
        .await?
        .ok_or_else(|| not_found(&read.digest))?;
    let name = StoredName::Blob(read.digest);
    let path = cas_path(&read.digest);
    let layout = layout(&record);

    let opened = if let Some(spec) = read.range {
        let Some(range) = spec.resolve(layout.size) else {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{}", layout.size)),
            );
            return Ok(response);
        };
        let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, layout.size);
        let length = range.end - range.start;
        download::range(&state.storage, &path, layout, range)
            .await
            .map(|body| {
                (
                    StatusCode::PARTIAL_CONTENT,
                    body,
                    length,
                    None,
                    Some(content_range),
                )
            })
    } else if read.accept_zstd && layout.encoding == Encoding::Zstd {
        download::stored(&state.storage, &path)
            .await
            .map(|body| (StatusCode::OK, body, layout.stored_size, Some(ZSTD), None))
    } else {
        download::plain(&state.storage, &path, layout)
            .await
            .map(|body| (StatusCode::OK, body, layout.size, None, None))
    };
    let (status, body, length, encoding, content_range) = match opened {
        Ok(parts) => parts,
        Err(download::ReadError::Storage(crate::storage::StorageError::NotFound)) => {
            // The index outlived the object (deleted behind our back): heal it.
            state.index.remove(&name).await?;
            return Err(not_found(&read.digest));
        }
        Err(other) => return Err(other.into()),
    };
    state.index.record_access(&name);

    let mut response = Response::new(Body::from_stream(counted(body, state.metrics.clone())));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    out.insert(header::ETAG, etag(&read.digest));
    if let Some(encoding) = encoding {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    if let Some(content_range) = content_range {
        out.insert(header::CONTENT_RANGE, header_value(content_range));
    }
    Ok(response)
}

/// `PUT /v1/cas/{digest}`: verified while streaming, published only on a match.
pub async fn put_blob(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let write = BlobWrite::parse(&raw, &headers)?;
    let result = store(&state, &write, body).await;
    let outcome = if result.is_ok() {
        WriteResult::Stored
    } else {
        WriteResult::Rejected
    };
    state.metrics.write(Protocol::Cas, outcome);
    result
}

async fn store(state: &AppState, write: &BlobWrite, body: Body) -> Result<Response, ApiError> {
    let limit = state.upload.max_size;
    if write.declared_length.is_some_and(|length| length > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let name = StoredName::Blob(write.digest);
    if let Some(record) = state.index.get(&name).await? {
        // Read the body to its end (without storing it) so that a client
        // still sending gets the answer instead of a reset connection.
        discard(body, limit).await;
        return Ok(stored_response(StatusCode::OK, &write.digest, &record.size));
    }
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let wire = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        chunk.map_err(io::Error::other)
    });
    let reader = StreamReader::new(wire);
    let content: Box<dyn AsyncRead + Send + Unpin> = match write.encoding {
        BodyEncoding::Identity => Box::new(reader),
        BodyEncoding::Zstd => {
            let mut decoder = ZstdDecoder::new(reader);
            decoder.multiple_members(true);
            Box::new(decoder)
        }
    };
    let path = cas_path(&write.digest);
    let check = upload::ContentCheck::Blake3(write.digest);
    let stored =
        upload::store_verified(&state.storage, path, check, content, state.upload, false).await?;
    state
        .index
        .put(
            &name,
            NewObject {
                size: stored.size,
                stored_size: stored.stored_size,
                encoding: stored.encoding,
                etag: None,
                meta: None,
            },
        )
        .await?;
    state.metrics.received(
        Protocol::Cas,
        received.load(std::sync::atomic::Ordering::Relaxed),
    );
    tracing::debug!(digest = %write.digest, size = stored.size, stored = stored.stored_size,
        encoding = stored.encoding.as_str(), "blob stored");
    Ok(stored_response(
        StatusCode::CREATED,
        &write.digest,
        &stored.size,
    ))
}

/// Reads and drops a request body, up to `limit` bytes.
async fn discard(body: Body, limit: u64) {
    let mut seen = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
}

fn stored_response(status: StatusCode, digest: &Digest, size: &u64) -> Response {
    (status, Json(json!({ "digest": digest, "size": size }))).into_response()
}

/// `POST /v1/cas/missing`: which of these digests the server lacks.
pub async fn missing(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_MISSING_BODY)
        .await
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_MISSING_BODY as u64,
        })?;
    let request: MissingRequest = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"digests\": [...]}}: {error}"),
        )
    })?;
    let missing = state.index.missing(request.digests).await?;
    Ok(Json(MissingResponse { missing }).into_response())
}

fn etag(digest: &Digest) -> HeaderValue {
    header_value(format!("\"{digest}\""))
}

fn header_value(text: String) -> HeaderValue {
    // Only ever built from digits, hex and ASCII punctuation.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Counts the bytes a response body actually sends.
fn counted(body: BodyStream, metrics: Arc<Metrics>) -> BodyStream {
    body.inspect_ok(move |chunk| metrics.served(Protocol::Cas, chunk.len() as u64))
        .boxed()
}
