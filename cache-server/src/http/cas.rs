//! `/v1/cas/{digest}` and `/v1/cas/missing`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cache_proto::Digest;
use cache_proto::body::{MissingRequest, MissingResponse};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::object::{self, IfExists, ReadOptions, WriteOptions};
use super::request::{self, BodyEncoding, RangeSpec};
use crate::blob::StoredName;
use crate::blob::upload::ContentCheck;
use crate::metrics::Protocol;

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

fn not_found(digest: &Digest) -> ApiError {
    ApiError::NotFound(format!("blob {digest} not found"))
}

/// `HEAD /v1/cas/{digest}`: answered from the index.
pub async fn head_blob(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let digest = request::digest(&raw)?;
    let name = StoredName::Blob(digest);
    let record = object::lookup(&state, &name, Protocol::Cas)
        .await?
        .ok_or_else(|| not_found(&digest))?;
    let mut response = object::head(&record);
    response.headers_mut().insert(header::ETAG, etag(&digest));
    Ok(response)
}

/// `GET /v1/cas/{digest}`: streamed; zstd passthrough, decompressed, or a range.
pub async fn get_blob(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let read = BlobRead::parse(&raw, &headers)?;
    let name = StoredName::Blob(read.digest);
    let options = ReadOptions {
        accept_zstd: read.accept_zstd,
        range: read.range,
    };
    if let Some(mut response) = object::get_hot(&state, &name, Protocol::Cas, options) {
        response
            .headers_mut()
            .insert(header::ETAG, etag(&read.digest));
        return Ok(response);
    }
    let record = object::lookup(&state, &name, Protocol::Cas)
        .await?
        .ok_or_else(|| not_found(&read.digest))?;
    let mut response = object::get(&state, &name, &record, Protocol::Cas, options)
        .await?
        .ok_or_else(|| not_found(&read.digest))?;
    response
        .headers_mut()
        .insert(header::ETAG, etag(&read.digest));
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
    let options = WriteOptions {
        encoding: write.encoding,
        declared_length: write.declared_length,
        check: ContentCheck::Blake3(write.digest),
        if_exists: IfExists::Keep,
        meta: None,
    };
    let name = StoredName::Blob(write.digest);
    let written = object::put(&state, &name, Protocol::Cas, options, body).await?;
    Ok((
        written.status(),
        Json(json!({ "digest": write.digest, "size": written.size() })),
    )
        .into_response())
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
    // Hex only: always a valid header value.
    HeaderValue::from_str(&format!("\"{digest}\"")).unwrap_or_else(|_| HeaderValue::from_static(""))
}
