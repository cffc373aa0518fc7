//! `/v1/cas/{digest}` and `/v1/cas/missing`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::body::{MissingRequest, MissingResponse};
use cache_proto::headers::{NO_REDIRECT, ZSTD};
use cache_proto::{Digest, batch};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::error::ApiError;
use super::object::{self, IfExists, ReadOptions, WriteOptions};
use super::request::{self, BodyEncoding, RangeSpec};
use crate::blob::StoredName;
use crate::blob::download::{self, BlobLayout};
use crate::blob::format::Encoding;
use crate::blob::upload::ContentCheck;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;
use crate::state::AppState;

/// Largest `missing` request body.
const MAX_MISSING_BODY: usize = 4 * 1024 * 1024;

/// How long a redirect's presigned URL stays valid.
const REDIRECT_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// A parsed `GET /v1/cas/{digest}`.
#[derive(Debug)]
struct BlobRead {
    digest: Digest,
    accept_zstd: bool,
    range: Option<RangeSpec>,
    may_redirect: bool,
}

impl BlobRead {
    fn parse(raw: &str, headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(Self {
            digest: request::digest(raw)?,
            accept_zstd: request::accepts_zstd(headers),
            range: request::range(headers),
            may_redirect: !headers.contains_key(NO_REDIRECT),
        })
    }

    fn options(&self) -> ReadOptions {
        ReadOptions {
            accept_zstd: self.accept_zstd,
            range: self.range,
        }
    }
}

/// A `307` to a presigned URL of the blob, when redirects are on, the blob
/// is above the threshold, stored as its own bytes (bare), and the store
/// can presign. The client's `Range` header, resent on the redirect, reads
/// the same bytes from the object store.
async fn redirect(
    state: &AppState,
    read: &BlobRead,
    record: &crate::index::ObjectRecord,
) -> Result<Option<Response>, ApiError> {
    let Some(threshold) = state.redirect_reads_over else {
        return Ok(None);
    };
    if !read.may_redirect || record.size <= threshold || record.encoding != Encoding::Bare {
        return Ok(None);
    }
    let path = StoredName::Blob(read.digest).path();
    let Some(url) = state
        .storage
        .presigned_get(&path, REDIRECT_VALID_FOR)
        .await?
    else {
        return Ok(None);
    };
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return Ok(None);
    };
    state.index.record_access(&StoredName::Blob(read.digest));
    state.metrics.redirected(Protocol::Cas, record.size);
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Some(response))
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
    // The request, not a `HeaderMap`: that extractor copies every header.
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let read = BlobRead::parse(&raw, request.headers())?;
    if let Some(response) = hot_response(&state, &read) {
        return Ok(response);
    }
    let name = StoredName::Blob(read.digest);
    let options = read.options();
    let record = object::lookup(&state, &name, Protocol::Cas)
        .await?
        .ok_or_else(|| not_found(&read.digest))?;
    if let Some(response) = redirect(&state, &read, &record).await? {
        return Ok(response);
    }
    let opened = object::open(&state, &name, &record, Protocol::Cas, options)
        .await?
        .ok_or_else(|| not_found(&read.digest))?;
    let mut response = object::respond(opened);
    response
        .headers_mut()
        .insert(header::ETAG, etag(&read.digest));
    Ok(response)
}

/// A plain read of the blob `raw` names, from the hot cache, with its
/// ETag: `None` when `raw` is not a digest, the read is not plain (a range,
/// zstd accepted) or the blob is not cached. The router's
/// [`super::hot_path`] answers with it before routing.
pub(super) fn get_hot_blob(state: &AppState, raw: &str, headers: &HeaderMap) -> Option<Response> {
    hot_response(state, &BlobRead::parse(raw, headers).ok()?)
}

fn hot_response(state: &AppState, read: &BlobRead) -> Option<Response> {
    let name = StoredName::Blob(read.digest);
    let (_, mut response) = object::get_hot(state, &name, Protocol::Cas, read.options())?;
    response
        .headers_mut()
        .insert(header::ETAG, etag(&read.digest));
    Some(response)
}

/// `PUT /v1/cas/{digest}`: verified while streaming, published only on a match.
pub async fn put_blob(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
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
        owner: namespaces.own,
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
pub async fn missing(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    body: Body,
) -> Result<Response, ApiError> {
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
    let missing = state.catalog.missing(request.digests.clone()).await?;
    // What the client will not upload because it is present, it relies on.
    let present = request.digests.into_iter().filter(|d| !missing.contains(d));
    object::claim(
        &state,
        &namespaces.own,
        present.map(StoredName::Blob).collect(),
    )
    .await?;
    Ok(Json(MissingResponse { missing }).into_response())
}

/// Reads a whole request body of at most `limit` bytes once decoded; a
/// zstd body is decompressed with the same bound, so a small body that
/// expands past it is refused, not inflated.
async fn read_bounded(body: Body, encoding: BodyEncoding, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = move || ApiError::TooLarge { limit };
    let raw = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| too_large())?;
    match encoding {
        BodyEncoding::Identity => Ok(raw),
        BodyEncoding::Zstd => tokio::task::spawn_blocking(move || {
            let decoder = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(decoder, limit + 1), &mut plain)
                .map_err(|e| ApiError::bad_request("bad_body", format!("malformed zstd: {e}")))?;
            if plain.len() as u64 > limit {
                return Err(too_large());
            }
            Ok(Bytes::from(plain))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?,
    }
}

/// `POST /v1/cas/batch`: many small blobs in one body, each verified and
/// stored like a single upload; a record whose content does not hash to
/// its digest is not stored, and the answer is then `400` naming it.
pub async fn put_batch(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let encoding = request::body_encoding(&headers)?;
    let bytes = read_bounded(body, encoding, batch::MAX_BODY).await?;
    let records: Vec<(Digest, Bytes)> = batch::parse(&bytes)
        .map_err(|error| ApiError::bad_request("bad_batch", error.to_string()))?
        .into_iter()
        .map(|(digest, content)| (digest, bytes.slice_ref(content)))
        .collect();
    let mut stored = 0u64;
    let mut kept = 0u64;
    let mut rejected = Vec::new();
    let state = &state;
    let owner = &namespaces.own;
    let mut writes =
        futures::stream::iter(records.into_iter().map(|(digest, content)| async move {
            if Digest::of(&content) != digest {
                return (digest, Err(None));
            }
            let options = WriteOptions {
                encoding: BodyEncoding::Identity,
                declared_length: Some(content.len() as u64),
                check: ContentCheck::Blake3(digest),
                if_exists: IfExists::Keep,
                meta: None,
                owner: owner.clone(),
            };
            let name = StoredName::Blob(digest);
            let written =
                object::put(state, &name, Protocol::Cas, options, Body::from(content)).await;
            (digest, written.map_err(Some))
        }))
        .buffer_unordered(8);
    while let Some((digest, result)) = writes.next().await {
        match result {
            Ok(object::Written::Created(_)) => stored += 1,
            Ok(_) => kept += 1,
            Err(None) => rejected.push(digest),
            Err(Some(error)) => return Err(error),
        }
    }
    if !rejected.is_empty() {
        return Err(ApiError::bad_request(
            "digest_mismatch",
            format!(
                "{} batched blobs do not hash to their digests and were not stored, the first {}",
                rejected.len(),
                rejected[0]
            ),
        ));
    }
    Ok(Json(json!({ "stored": stored, "kept": kept })).into_response())
}

/// `POST /v1/cas/batch-get`: `{"digests": [...]}` (up to
/// [`batch::MAX_DIGESTS`]) answered as batch records of the blobs that are
/// stored and small enough, in request order, up to [`batch::MAX_BODY`]
/// bytes; the client asks again for what is left out. zstd for a client
/// that takes it.
pub async fn get_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_bounded(body, BodyEncoding::Identity, MAX_MISSING_BODY as u64).await?;
    let wanted: MissingRequest = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"digests\": [...]}}: {error}"),
        )
    })?;
    if wanted.digests.len() > batch::MAX_DIGESTS {
        return Err(ApiError::bad_request(
            "too_many",
            format!("at most {} digests per batch", batch::MAX_DIGESTS),
        ));
    }
    let mut out = Vec::new();
    // Several reads in flight, answered in request order.
    let state_ref = &state;
    let mut reads = futures::stream::iter(wanted.digests)
        .map(|digest| async move { (digest, read_batched(state_ref, digest).await) })
        .buffered(8);
    while let Some((digest, content)) = reads.next().await {
        let Some(content) = content? else {
            continue;
        };
        if out.len() as u64 + 36 + content.len() as u64 > batch::MAX_BODY {
            break;
        }
        state.metrics.served(Protocol::Cas, content.len() as u64);
        batch::push(&mut out, &digest, &content);
    }
    drop(reads);
    if request::accepts_zstd(&headers) {
        let packed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&out, 1))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut response = Response::new(Body::from(packed));
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(ZSTD));
        return Ok(response);
    }
    Ok(Response::new(Body::from(out)))
}

/// A stored blob small enough for a batch, read whole; `None` when it is
/// absent, too large, being evicted or gone from storage.
async fn read_batched(state: &AppState, digest: Digest) -> Result<Option<Vec<u8>>, ApiError> {
    let name = StoredName::Blob(digest);
    let Some(record) = object::lookup(state, &name, Protocol::Cas).await? else {
        return Ok(None);
    };
    if record.size > batch::MAX_BLOB {
        return Ok(None);
    }
    let Some(_reading) = state.in_use.try_use(&name) else {
        return Ok(None);
    };
    let layout = BlobLayout {
        size: record.size,
        stored_size: record.stored_size,
        encoding: record.encoding,
    };
    let stream = match download::plain(&state.storage, &name.path(), layout).await {
        Ok(stream) => stream,
        Err(download::ReadError::Storage(crate::storage::StorageError::NotFound)) => {
            return Ok(None);
        }
        Err(other) => return Err(other.into()),
    };
    let content: Vec<u8> = stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .map_err(|e| ApiError::StorageUnavailable(crate::storage::StorageError::Io(e)))?;
    state.index.record_access(&name);
    Ok(Some(content))
}

fn etag(digest: &Digest) -> HeaderValue {
    // Built in place: this runs for every blob read.
    let mut quoted = [b'"'; 66];
    quoted[1..65].copy_from_slice(&digest.hex_bytes());
    // Hex only: always a valid header value.
    HeaderValue::from_bytes(&quoted).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_is_the_quoted_digest() {
        let digest = Digest::of(b"etag");
        assert_eq!(
            etag(&digest).to_str().unwrap(),
            format!("\"{digest}\""),
            "a client's If-None-Match compares this exactly"
        );
    }
}
