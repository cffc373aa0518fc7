//! One stored object read or written, whatever protocol named it: the
//! shared core under the native CAS, every HTTP compatibility adapter and
//! the gRPC services (lookup with hit/miss counting, streamed and ranged
//! reads, zstd passthrough, verified streaming writes, deletes). It knows
//! nothing of HTTP or gRPC: each protocol turns its results into its own
//! answers and maps [`ObjectError`] once.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cache_proto::Namespace;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;

use crate::blob::StoredName;
use crate::blob::download::{self, BlobLayout, BodyStream, ReadError};
use crate::blob::format::Encoding;
use crate::blob::upload::{self, ContentCheck, UploadError};
use crate::cache::hot::Cached;
use crate::error::{ApiError, CacheError};
use crate::index::{IndexError, NewObject, ObjectRecord};
use crate::metrics::{Metrics, Protocol, ReadResult, WriteResult};
use crate::state::AppState;
use crate::storage::StorageError;

/// Largest refused body that is still read (and dropped) before answering.
pub const DRAIN_REFUSED_UP_TO: u64 = 16 * 1024 * 1024;

/// Why an object could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The body is over the size limit (the server's, or a quota's).
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The entry exists and the write may not replace it.
    #[error("the entry exists")]
    Exists,
    /// The store (or a namespace) cannot make room under its quota.
    #[error("{0}")]
    NoRoom(String),
    /// The stored state could not be read or changed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A stored object could not be read back.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An upload was not stored (digest mismatch, body error, storage).
    #[error(transparent)]
    Upload(#[from] UploadError),
}

impl From<ObjectError> for ApiError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::TooLarge { limit } => Self::TooLarge { limit },
            exists @ ObjectError::Exists => Self::Conflict(exists.to_string()),
            ObjectError::NoRoom(message) => Self::InsufficientStorage(message),
            ObjectError::Cache(error) => error.into(),
            ObjectError::Storage(error) => error.into(),
            ObjectError::Index(error) => error.into(),
            ObjectError::Read(error) => error.into(),
            ObjectError::Upload(error) => error.into(),
        }
    }
}

/// One byte range as a client asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// Bytes `a` to `b`, inclusive.
    Bounded(u64, u64),
    /// From byte `a` to the end.
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The byte range within an object of `size` bytes, or `None` when it
    /// is unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        let range = match self {
            Self::Bounded(a, b) => a..b.saturating_add(1).min(size),
            Self::From(a) => a..size,
            Self::Suffix(n) => size.saturating_sub(n)..size,
        };
        (range.start < range.end).then_some(range)
    }
}

/// How a body to store is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// As is.
    Identity,
    /// zstd-compressed.
    Zstd,
}

/// How a read wants the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The client takes the stored zstd frames as they are.
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
    /// Refuse ([`ObjectError::Exists`]: Nx).
    Refuse,
}

/// A write as a protocol asks for it.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// How the body is encoded.
    pub encoding: BodyEncoding,
    /// The declared length, if any.
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
}

/// The bytes of an object being read.
pub enum Content {
    /// Small and whole: in memory.
    Whole(Bytes),
    /// Streamed from storage; the object stays safe from eviction until the
    /// stream is dropped.
    Stream(BodyStream),
}

/// An object opened for reading.
pub struct Opened {
    /// Its bytes.
    pub content: Content,
    /// How many bytes `content` yields.
    pub length: u64,
    /// The bytes are the stored zstd frames, as they are (only when the
    /// reader accepts zstd).
    pub zstd: bool,
    /// The range served, with the object's size, for a range read.
    pub range: Option<(Range<u64>, u64)>,
}

/// What a read found.
pub enum Read {
    /// The bytes to send.
    Opened(Opened),
    /// The requested range lies outside the object of this size.
    Unsatisfiable(u64),
}

/// The index row of `name`, counting a hit or a miss for `protocol`.
pub async fn lookup(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
) -> Result<Option<ObjectRecord>, ObjectError> {
    let record = state.catalog.find(name).await?;
    let result = if record.is_some() {
        ReadResult::Hit
    } else {
        ReadResult::Miss
    };
    state.metrics.read(protocol, result);
    Ok(record)
}

/// A plain read answered from the hot cache (small, recently read
/// objects), counting the hit; `None` when not cached or not a plain read.
pub fn get_hot(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: ReadOptions,
) -> Option<Arc<Cached>> {
    if options.range.is_some() || !hot_allowed(state, name) {
        return None;
    }
    let cached = state.hot.get(name)?;
    state.metrics.read(protocol, ReadResult::Hit);
    state.metrics.served(protocol, cached.content.len() as u64);
    state.index.record_access(name);
    Some(cached)
}

/// Whether `name` may be served from memory: always on a single server; with
/// replicas sharing the store only blobs, whose content never changes (an
/// entry replaced or deleted through another replica must not be served).
fn hot_allowed(state: &AppState, name: &StoredName) -> bool {
    !state.catalog.is_shared() || matches!(name, StoredName::Blob(_))
}

/// Opens the object `name` described by `record`: the stored zstd frames
/// as they are for a zstd-accepting reader, a range, or the plain bytes.
/// `None` when the object vanished from storage behind the index's back
/// (the row is removed: the caller answers a miss).
pub async fn get(
    state: &AppState,
    name: &StoredName,
    record: &ObjectRecord,
    protocol: Protocol,
    options: ReadOptions,
) -> Result<Option<Read>, ObjectError> {
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
    let mut served = Opened {
        content: Content::Whole(Bytes::new()),
        length: layout.size,
        zstd: false,
        range: None,
    };
    let opened = if let Some(spec) = options.range {
        let Some(range) = spec.resolve(layout.size) else {
            return Ok(Some(Read::Unsatisfiable(layout.size)));
        };
        served.length = range.end - range.start;
        served.range = Some((range.clone(), layout.size));
        download::range(&state.storage, &path, layout, range).await
    } else if !small && options.accept_zstd && layout.encoding == Encoding::Zstd {
        served.length = layout.stored_size;
        served.zstd = true;
        download::stored(&state.storage, &path).await
    } else {
        download::plain(&state.storage, &path, layout).await
    };
    let body = match opened {
        Ok(body) => body,
        Err(ReadError::Storage(StorageError::NotFound)) => {
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
            .map_err(StorageError::Io)?;
        drop(guard);
        let content = Bytes::from(content);
        if keep_hot {
            state.hot.insert(name, record, content.clone(), generation);
        }
        state.metrics.served(protocol, content.len() as u64);
        served.content = Content::Whole(content);
        return Ok(Some(Read::Opened(served)));
    }
    let body = counted(body, state.metrics.clone(), protocol)
        .map(move |chunk| {
            let _held = &guard;
            chunk
        })
        .boxed();
    served.content = Content::Stream(body);
    Ok(Some(Read::Opened(served)))
}

/// Counts the bytes a body actually sends, and logs a failure mid-stream
/// (the client sees its connection cut short).
fn counted(body: BodyStream, metrics: Arc<Metrics>, protocol: Protocol) -> BodyStream {
    body.inspect_err(|error| tracing::error!(%error, "a response body failed mid-stream"))
        .inspect_ok(move |chunk| metrics.served(protocol, chunk.len() as u64))
        .boxed()
}

/// Stores `body` as `name`: streamed, checked, published atomically, then
/// indexed. Counts the write (stored or rejected) for `protocol`. An `Err`
/// item in `body` aborts the write, nothing stored.
pub async fn put<S>(
    state: &AppState,
    name: &StoredName,
    protocol: Protocol,
    options: WriteOptions,
    body: S,
) -> Result<Written, ObjectError>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let to = Target {
        state,
        name,
        protocol,
    };
    let result = store(to, options, body).await;
    let outcome = if result.is_ok() {
        WriteResult::Stored
    } else {
        WriteResult::Rejected
    };
    state.metrics.write(protocol, outcome);
    result
}

/// Where a write goes: the object `name`, for `protocol`.
struct Target<'a> {
    state: &'a AppState,
    name: &'a StoredName,
    protocol: Protocol,
}

async fn store<S>(to: Target<'_>, options: WriteOptions, body: S) -> Result<Written, ObjectError>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let Target {
        state,
        name,
        protocol,
    } = to;
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
        // sending, gets the refusal rather than a reset connection; a huge
        // one is refused without reading it.
        if length <= DRAIN_REFUSED_UP_TO {
            discard(body, DRAIN_REFUSED_UP_TO).await;
        }
        return Err(ObjectError::TooLarge { limit });
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
                return Err(ObjectError::Exists);
            }
            IfExists::Replace => {}
        }
    }
    if let Some(length) = options.declared_length
        && let Some(refusal) = no_room_for(state, &options.owner, length).await?
    {
        discard(body, limit).await;
        return Err(ObjectError::NoRoom(refusal));
    }
    // Waits while other uploads hold the memory budget; the client is held
    // back by flow control meanwhile.
    let plain_length = match options.encoding {
        BodyEncoding::Identity => options.declared_length,
        BodyEncoding::Zstd => None,
    };
    let _memory = state.upload_memory.reserve(plain_length).await;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let wire = body.inspect_ok(move |bytes| {
        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
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

/// Makes room for `length` more bytes under the store's quota and then
/// `owner`'s; why there is none, if so.
async fn no_room_for(
    state: &AppState,
    owner: &Namespace,
    length: u64,
) -> Result<Option<String>, ObjectError> {
    if let Some(evictor) = &state.evictor
        && !evictor.make_room(length).await?
    {
        return Ok(Some(format!(
            "the store cannot make room for {length} bytes under its quota of {} bytes",
            evictor.quota()
        )));
    }
    if let Some(quotas) = &state.namespace_quotas
        && !quotas.make_room(owner, length).await?
    {
        return Ok(Some(format!(
            "namespace {owner} cannot make room for {length} bytes under its quota"
        )));
    }
    Ok(None)
}

/// Charges `names` (objects a request in `namespace` stored again or found
/// present, so relies on) to `namespace` when it has no quota of its own
/// and they are charged to one that has: another namespace's quota then
/// never evicts them. Nothing to do without namespace quotas.
pub async fn claim(
    state: &AppState,
    namespace: &Namespace,
    names: Vec<StoredName>,
) -> Result<(), ObjectError> {
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

/// Reads and drops a body, up to `limit` bytes; whether it was read to its
/// end.
pub async fn discard<S>(mut body: S, limit: u64) -> bool
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let mut seen = 0u64;
    while let Some(chunk) = body.next().await {
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
pub async fn delete(state: &AppState, name: &StoredName) -> Result<bool, ObjectError> {
    state.hot.remove(name);
    let in_storage = state.storage.delete(&name.path()).await?;
    let in_index = state.index.remove(name).await?;
    Ok(in_storage || in_index)
}
