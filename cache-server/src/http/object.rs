//! One stored object read or written, whatever protocol named it: the
//! shared core under the native CAS and every compatibility adapter
//! (lookup with hit/miss counting, streamed and ranged reads, zstd
//! passthrough, verified streaming writes, deletes).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::Namespace;
use cache_proto::headers::ZSTD;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;

use super::error::ApiError;
use super::request::{BodyEncoding, RangeSpec};
use crate::blob::StoredName;
use crate::blob::download::{self, BlobLayout, BodyStream};
use crate::blob::format::Encoding;
use crate::blob::upload::{self, ContentCheck};
use crate::index::{NewObject, ObjectRecord};
use crate::metrics::{Metrics, Protocol, ReadResult, WriteResult};
use crate::state::AppState;

/// Largest refused body that is still read (and dropped) before answering.
pub const DRAIN_REFUSED_UP_TO: u64 = 16 * 1024 * 1024;

/// How a read wants the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The client takes `Content-Encoding: zstd`.
    pub accept_zstd: bool,
    /// Only these bytes.
    pub range: Option<RangeSpec>,
}

/// What a write does when the object exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Keep it and drain the body (content addresses: same bytes).
    Keep,
    /// Replace it atomically.
    Replace,
    /// Refuse with 409 (Nx).
    Refuse,
}

/// A write as parsed from a request.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// How the body is encoded.
    pub encoding: BodyEncoding,
    /// The declared `Content-Length`, if any.
    pub declared_length: Option<u64>,
    /// What the content must hash to.
    pub check: ContentCheck,
    /// When the object exists.
    pub if_exists: IfExists,
    /// Protocol metadata to keep in the index.
    pub meta: Option<String>,
    /// The namespace of the request: charged for what it stores.
    pub owner: Namespace,
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// New object of this size.
    Created(u64),
    /// Replaced, new size.
    Replaced(u64),
    /// Already there, kept; its size.
    Kept(u64),
}

impl Written {
    /// The size of the object now stored.
    pub fn size(self) -> u64 {
        match self {
            Self::Created(size) | Self::Replaced(size) | Self::Kept(size) => size,
        }
    }

    /// 201 for a new object, else 200.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Created(_) => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

/// The index row of `name`, counting a hit or a miss for `protocol`.
pub async fn lookup(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
) -> Result<Option<ObjectRecord>, ApiError> {
    let record = state.catalog.find(name).await?;
    let result = if record.is_some() {
        ReadResult::Hit
    } else {
        ReadResult::Miss
    };
    state.metrics.read(protocol, result);
    Ok(record)
}

/// A plain `GET` answered from the hot cache (small, recently read
/// objects), counting the hit; `None` when not cached or not a plain read.
pub fn get_hot(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: ReadOptions,
) -> Option<(ObjectRecord, Response)> {
    if options.range.is_some() || !hot_allowed(state, name) {
        return None;
    }
    let (record, content) = state.hot.get(name)?;
    state.metrics.read(protocol, ReadResult::Hit);
    state.metrics.served(protocol, content.len() as u64);
    state.index.record_access(name);
    Some((record, small_response(content)))
}

/// Whether `name` may be served from memory: always on a single server; with
/// replicas sharing the store only blobs, whose content never changes (an
/// entry replaced or deleted through another replica must not be served).
fn hot_allowed(state: &AppState, name: &StoredName) -> bool {
    !state.catalog.is_shared() || matches!(name, StoredName::Blob(_))
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

/// Streams the object `name` described by `record`: the stored zstd frames
/// as they are for a zstd-accepting client, a range (206, or 416), or the
/// plain bytes. `None` when the object vanished from storage behind the
/// index's back (the row is removed: the caller answers a miss).
pub async fn get(
    state: &AppState,
    name: &StoredName,
    record: &ObjectRecord,
    protocol: Protocol,
    options: ReadOptions,
) -> Result<Option<Response>, ApiError> {
    // Held until the body is sent: eviction leaves the object alone. An
    // object being evicted right now is a miss.
    let Some(guard) = state.in_use.try_use(name) else {
        return Ok(None);
    };
    let path = name.path();
    let layout = BlobLayout {
        size: record.size,
        stored_size: record.stored_size,
        encoding: record.encoding,
    };
    // Small and whole: read into memory, kept hot, answered from there.
    let small = options.range.is_none() && record.size <= crate::cache::hot::MAX_OBJECT;
    let keep_hot = small && hot_allowed(state, name);
    let generation = state.hot.generation();
    let opened = if let Some(spec) = options.range {
        let Some(range) = spec.resolve(layout.size) else {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{}", layout.size)),
            );
            return Ok(Some(response));
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
    } else if !small && options.accept_zstd && layout.encoding == Encoding::Zstd {
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
            state.index.remove(name).await?;
            return Ok(None);
        }
        Err(other) => return Err(other.into()),
    };
    state.index.record_access(name);
    if small {
        let content: Vec<u8> = body
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .map_err(|e| ApiError::StorageUnavailable(crate::storage::StorageError::Io(e)))?;
        drop(guard);
        let content = bytes::Bytes::from(content);
        if keep_hot {
            state.hot.insert(name, record, content.clone(), generation);
        }
        state.metrics.served(protocol, content.len() as u64);
        return Ok(Some(small_response(content)));
    }

    let body = counted(body, state.metrics.clone(), protocol)
        .map(move |chunk| {
            let _held = &guard;
            chunk
        })
        .boxed();
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    content_headers(&mut response, length);
    let out = response.headers_mut();
    if let Some(encoding) = encoding {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    if let Some(content_range) = content_range {
        out.insert(header::CONTENT_RANGE, header_value(content_range));
    }
    Ok(Some(response))
}

/// Counts the bytes a response body actually sends, and logs a failure
/// mid-stream (the client sees its connection cut short).
fn counted(body: BodyStream, metrics: Arc<Metrics>, protocol: Protocol) -> BodyStream {
    body.inspect_err(|error| tracing::error!(%error, "a response body failed mid-stream"))
        .inspect_ok(move |chunk| metrics.served(protocol, chunk.len() as u64))
        .boxed()
}

/// Stores `body` as `name`: streamed, checked, published atomically, then
/// indexed. Counts the write (stored or rejected) for `protocol`.
pub async fn put(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: WriteOptions,
    body: Body,
) -> Result<Written, ApiError> {
    // Every outcome is counted below: a `return` in this block ends the
    // block, not `put`.
    let result = async {
        let namespace_quota = state
            .namespace_quotas
            .as_ref()
            .and_then(|quotas| quotas.quota_of(&options.owner));
        let limit = [state.quota(), namespace_quota]
            .into_iter()
            .flatten()
            .fold(state.upload.max_size, u64::min);
        if let Some(length) = options.declared_length
            && length > limit
        {
            // A modest body is read and dropped so that the client, still
            // sending, gets the 413 rather than a reset connection; a huge one
            // is refused without reading it.
            if length <= DRAIN_REFUSED_UP_TO {
                discard(body, DRAIN_REFUSED_UP_TO).await;
            }
            return Err(ApiError::TooLarge { limit });
        }
        // Held while the object is written: eviction leaves it alone.
        let _writing = state.in_use.use_waiting(name).await;
        let existing = state.catalog.find(name).await?;
        if let Some(record) = &existing {
            match options.if_exists {
                IfExists::Keep => {
                    // Read the body to its end (without storing it) so that a
                    // client still sending gets the answer, not a reset.
                    discard(body, limit).await;
                    claim(state, &options.owner, vec![name.clone()]).await?;
                    return Ok(Written::Kept(record.size));
                }
                IfExists::Refuse => {
                    discard(body, limit).await;
                    return Err(ApiError::Conflict("the entry exists".into()));
                }
                IfExists::Replace => {}
            }
        }
        if let (Some(evictor), Some(length)) = (&state.evictor, options.declared_length)
            && !evictor.make_room(length).await.map_err(ApiError::from)?
        {
            discard(body, limit).await;
            return Err(ApiError::InsufficientStorage(format!(
                "the store cannot make room for {length} bytes under its quota of {} bytes",
                evictor.quota()
            )));
        }
        if let (Some(quotas), Some(length)) = (&state.namespace_quotas, options.declared_length)
            && !quotas
                .make_room(&options.owner, length)
                .await
                .map_err(ApiError::from)?
        {
            discard(body, limit).await;
            return Err(ApiError::InsufficientStorage(format!(
                "namespace {} cannot make room for {length} bytes under its quota",
                options.owner
            )));
        }
        // Waits while other uploads hold the memory budget; the client is held
        // back by TCP flow control meanwhile.
        let plain_length = match options.encoding {
            BodyEncoding::Identity => options.declared_length,
            BodyEncoding::Zstd => None,
        };
        let _memory = state.upload_memory.reserve(plain_length).await;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let wire = body.into_data_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            chunk.map_err(io::Error::other)
        });
        let reader = StreamReader::new(wire);
        let content = match options.encoding {
            BodyEncoding::Identity => upload::Body::Plain(reader),
            BodyEncoding::Zstd => upload::Body::Zstd(reader),
        };
        let replace = options.if_exists == IfExists::Replace;
        if replace {
            state.hot.remove(name);
        }
        let settings = upload::UploadSettings {
            max_size: limit,
            ..state.upload
        };
        let stored = upload::store_verified(
            &state.storage,
            name.path(),
            options.check,
            content,
            settings,
            replace,
        )
        .await?;
        let object = NewObject {
            size: stored.size,
            stored_size: stored.stored_size,
            encoding: stored.encoding,
            etag: None,
            meta: options.meta,
            owner: Some(options.owner.clone()),
        };
        state.index.put(name, object).await?;
        if let Some(quotas) = &state.namespace_quotas {
            quotas.enforce(&options.owner).await?;
        }
        if replace {
            // Again: a read that began before the publish may have cached the old.
            state.hot.remove(name);
        }
        state
            .metrics
            .received(protocol, received.load(Ordering::Relaxed));
        tracing::debug!(
            size = stored.size,
            stored = stored.stored_size,
            encoding = stored.encoding.as_str(),
            "object stored"
        );
        Ok(if existing.is_some() {
            Written::Replaced(stored.size)
        } else {
            Written::Created(stored.size)
        })
    }
    .await;
    let outcome = if result.is_ok() {
        WriteResult::Stored
    } else {
        WriteResult::Rejected
    };
    state.metrics.write(protocol, outcome);
    result
}

/// Charges `names` (objects a request in `namespace` stored again or found
/// present, so relies on) to `namespace` when it has no quota of its own
/// and they are charged to one that has: another namespace's quota then
/// never evicts them. Nothing to do without namespace quotas.
pub async fn claim(
    state: &AppState,
    namespace: &Namespace,
    names: Vec<StoredName>,
) -> Result<(), ApiError> {
    let Some(quotas) = state.namespace_quotas.clone() else {
        return Ok(());
    };
    if names.is_empty() || quotas.quota_of(namespace).is_some() {
        return Ok(());
    }
    let owner = Some(namespace.clone()).filter(|namespace| !namespace.is_default());
    state
        .index
        .claim(names, owner, move |charged| {
            quotas.quota_of(charged).is_some()
        })
        .await?;
    Ok(())
}

/// Reads and drops a request body, up to `limit` bytes; whether it was
/// read to its end.
pub async fn discard(body: Body, limit: u64) -> bool {
    let mut seen = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return false;
        };
        seen += chunk.len() as u64;
        if seen > limit {
            return false;
        }
    }
    true
}

/// Deletes `name` from storage and index; whether it existed.
pub async fn delete(state: &AppState, name: &StoredName) -> Result<bool, ApiError> {
    state.hot.remove(name);
    let in_storage = state.storage.delete(&name.path()).await?;
    let in_index = state.index.remove(name).await?;
    Ok(in_storage || in_index)
}
