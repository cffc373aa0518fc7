//! The only path to bytes: a narrow facade over `object_store`.
//!
//! `object_store`'s [`ObjectStore`] trait is the backend seam; its local-folder,
//! S3 and in-memory implementations are the three backends, and the
//! conformance tests at the bottom of this module (and the end-to-end suite)
//! run against each of them. [`Storage`] adds what the cache needs on top:
//! a timeout on every call (an unreachable store answers an error, never a
//! hang), errors without HTTP types, and [`ObjectWriter`], which publishes an
//! object atomically only when the caller says the content is right.

mod location;
pub mod staging;
mod writer;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{
    ClientConfigKey, ClientOptions, GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, RetryConfig, UpdateVersion,
};

pub use location::{LocationError, StorageLocation};
pub use writer::{MAX_PARTS_IN_FLIGHT, ObjectWriter};

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// What went wrong talking to the store. Carries no HTTP notion.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object not found")]
    NotFound,
    /// The store did not answer in time.
    #[error("storage did not answer within {0:?}")]
    Timeout(Duration),
    /// The store has no space left (a full disk, a quota of the filesystem).
    #[error("storage is full: {0}")]
    Full(#[source] object_store::Error),
    /// The store answered with an error (unreachable, refused, I/O).
    #[error("storage error: {0}")]
    Backend(#[source] object_store::Error),
    /// Reading a local file failed.
    #[error("storage read failed: {0}")]
    Io(#[source] std::io::Error),
    /// The store could not be opened from its configuration.
    #[error("cannot open storage {location}: {reason}")]
    Open {
        /// The location given.
        location: String,
        /// Why it failed.
        reason: String,
    },
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other if out_of_space(&other) => Self::Full(other),
            other => Self::Backend(other),
        }
    }
}

/// Whether an I/O error somewhere in `error`'s chain says the disk or the
/// filesystem quota is full.
fn out_of_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Tunables of a [`Storage`].
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Upper bound of every single storage call (and of each chunk of a stream).
    pub timeout: Duration,
    /// Part size of multipart uploads; also the largest object written in one put.
    pub part_size: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            part_size: 8 * 1024 * 1024,
        }
    }
}

/// Handle to the object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<dyn ObjectStore>,
    options: StorageOptions,
    signer: Option<PresignedReads>,
}

/// What presigns GETs of an S3 store: the bucket's client and the prefix
/// our paths live under.
#[derive(Debug, Clone)]
struct PresignedReads {
    store: Arc<object_store::aws::AmazonS3>,
    prefix: String,
}

/// A stored object's listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Where it is.
    pub path: Path,
    /// Its size as stored.
    pub size: u64,
    /// When it was last written, unix milliseconds.
    pub modified_ms: i64,
}

/// A small object's content with the version it was read at, for a
/// conditional replace.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The content.
    pub bytes: Bytes,
    /// The store's version of it (its entity tag).
    pub version: UpdateVersion,
}

impl Storage {
    /// Opens the store at `location`. S3 settings come from the usual `AWS_*`
    /// environment variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`);
    /// path-style requests are the default.
    pub fn open(location: &StorageLocation, options: StorageOptions) -> Result<Self, StorageError> {
        let open_error = |reason: String| StorageError::Open {
            location: location.to_string(),
            reason,
        };
        let mut signer = None;
        let inner: Arc<dyn ObjectStore> = match location {
            StorageLocation::Local(folder) => {
                std::fs::create_dir_all(folder).map_err(|e| open_error(e.to_string()))?;
                let store = LocalFileSystem::new_with_prefix(folder)
                    .map_err(|e| open_error(e.to_string()))?
                    .with_automatic_cleanup(true);
                Arc::new(store)
            }
            StorageLocation::S3 { bucket, prefix } => {
                let retry = RetryConfig {
                    max_retries: 2,
                    retry_timeout: options.timeout,
                    ..RetryConfig::default()
                };
                let builder = AmazonS3Builder::from_env();
                // Our client options replace the ones read from the
                // environment, so carry AWS_ALLOW_HTTP over by hand.
                let allow_http = builder
                    .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                    .is_some_and(|value| value.eq_ignore_ascii_case("true"));
                let client = ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(options.timeout)
                    .with_connect_timeout(Duration::from_secs(3));
                let store = builder
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(|e| open_error(e.to_string()))?;
                let store = Arc::new(store);
                signer = Some(PresignedReads {
                    store: store.clone(),
                    prefix: prefix.clone(),
                });
                if prefix.is_empty() {
                    store
                } else {
                    Arc::new(PrefixStore::new(store, prefix.as_str()))
                }
            }
            StorageLocation::Memory => Arc::new(InMemory::new()),
        };
        Ok(Self {
            inner,
            options,
            signer,
        })
    }

    /// Wraps an already configured `object_store` backend.
    pub fn from_store(inner: Arc<dyn ObjectStore>, options: StorageOptions) -> Self {
        Self {
            inner,
            options,
            signer: None,
        }
    }

    /// Whether the store can hand out presigned read URLs.
    pub fn can_presign(&self) -> bool {
        self.signer.is_some()
    }

    /// A URL from which anyone may GET the object at `path` for `valid_for`
    /// without credentials; `None` when the store cannot presign.
    pub async fn presigned_get(
        &self,
        path: &Path,
        valid_for: Duration,
    ) -> Result<Option<url::Url>, StorageError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let full = if signer.prefix.is_empty() {
            path.clone()
        } else {
            Path::from_iter(
                Path::from(signer.prefix.as_str())
                    .parts()
                    .chain(path.parts()),
            )
        };
        let url = self
            .timed(
                signer
                    .store
                    .signed_url(axum::http::Method::GET, &full, valid_for),
            )
            .await?;
        Ok(Some(url))
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(result) => result.map_err(StorageError::from),
            Err(_) => Err(StorageError::Timeout(self.options.timeout)),
        }
    }

    /// The size of the object, or `None` when it does not exist.
    pub async fn size(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        match self.timed(self.inner.head(path)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(StorageError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Reads a whole (small) object, or `None` when it does not exist.
    pub async fn read_small(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        let read = async { self.inner.get(path).await?.bytes().await };
        match self.timed(read).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Reads `range` of an object into memory; for small reads such as trailers.
    pub async fn read_range(&self, path: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.timed(self.inner.get_range(path, range)).await
    }

    /// Streams an object (or the part of it from `offset` on). Each chunk is
    /// bounded by the storage timeout, so a stalled store ends the stream with
    /// an error instead of hanging the reader.
    pub async fn stream_from(&self, path: &Path, offset: u64) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let result = self.timed(self.inner.get_opts(path, options)).await?;
        Ok(self.byte_stream(result))
    }

    /// Streams `range` of an object.
    pub async fn stream_range(
        &self,
        path: &Path,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = self.timed(self.inner.get_opts(path, options)).await?;
        Ok(self.byte_stream(result))
    }

    /// The body of a read. A local file is read in large chunks here:
    /// `object_store`'s own file stream reads 8 KiB per blocking task, which
    /// caps a download at a fraction of what the disk gives.
    fn byte_stream(&self, result: GetResult) -> ByteStream {
        match result.payload {
            GetResultPayload::File(file, _) => file_stream(file, result.range),
            GetResultPayload::Stream(stream) => with_idle_timeout(stream, self.options.timeout),
        }
    }

    /// Writes a small object in one atomic put, replacing any existing one.
    pub async fn put_small(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.timed(self.inner.put(path, bytes.into())).await?;
        Ok(())
    }

    /// Writes a small object only if none exists. Returns `false` when one did.
    pub async fn create_small(&self, path: &Path, bytes: Bytes) -> Result<bool, StorageError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .timed(self.inner.put_opts(path, bytes.into(), options))
            .await
        {
            Ok(_) => Ok(true),
            Err(StorageError::Backend(object_store::Error::AlreadyExists { .. })) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Reads a small object with its version, or `None` when it does not exist.
    pub async fn read_versioned(&self, path: &Path) -> Result<Option<Versioned>, StorageError> {
        let read = async {
            let result = self.inner.get(path).await?;
            let version = UpdateVersion {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            let bytes = result.bytes().await?;
            Ok(Versioned { bytes, version })
        };
        match self.timed(read).await {
            Ok(read) => Ok(Some(read)),
            Err(StorageError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Replaces a small object only if it is still at `version`. Returns
    /// `false` when it changed (or vanished) since.
    pub async fn replace_if(
        &self,
        path: &Path,
        bytes: Bytes,
        version: UpdateVersion,
    ) -> Result<bool, StorageError> {
        let options = PutOptions {
            mode: PutMode::Update(version),
            ..PutOptions::default()
        };
        match self
            .timed(self.inner.put_opts(path, bytes.into(), options))
            .await
        {
            Ok(_) => Ok(true),
            Err(
                StorageError::NotFound
                | StorageError::Backend(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ),
            ) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Deletes an object. Returns `false` when it did not exist.
    pub async fn delete(&self, path: &Path) -> Result<bool, StorageError> {
        match self.size(path).await? {
            None => Ok(false),
            Some(_) => match self.timed(self.inner.delete(path)).await {
                Ok(()) | Err(StorageError::NotFound) => Ok(true),
                Err(other) => Err(other),
            },
        }
    }

    /// Lists every object under `prefix` with its size and modification time.
    pub fn list(&self, prefix: &Path) -> BoxStream<'static, Result<Listed, StorageError>> {
        let stream = self
            .inner
            .list(Some(prefix))
            .map_ok(|meta| Listed {
                path: meta.location,
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })
            .map_err(StorageError::from);
        with_idle_timeout(stream, self.options.timeout)
    }

    /// Answers whether the store is reachable: a listing of one entry succeeds.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let mut listing = self.inner.list(Some(&Path::from("cas")));
        self.timed(async { listing.next().await.transpose().map(|_| ()) })
            .await
    }
}

/// Bytes per blocking read of a local file.
const FILE_READ_CHUNK: u64 = 512 * 1024;
/// Reads of a local file in flight at once: the next chunk is read while
/// the one before goes out on the socket (one at a time, reading and
/// sending took turns, and a 1 GiB GET made 0.77x of nginx's `sendfile`).
const FILE_READS_IN_FLIGHT: usize = 2;

/// `range` of a local file in chunks of [`FILE_READ_CHUNK`], read on the
/// blocking pool [`FILE_READS_IN_FLIGHT`] at a time; ends after an error.
fn file_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    let file = Arc::new(file);
    let chunks = (range.start..range.end)
        .step_by(FILE_READ_CHUNK as usize)
        .map(move |offset| (offset, (range.end - offset).min(FILE_READ_CHUNK) as usize));
    futures::stream::iter(chunks)
        .map(move |(offset, len)| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || read_chunk(&file, offset, len))
                    .await
                    .unwrap_or_else(|join| Err(std::io::Error::other(join)))
            }
        })
        .buffered(FILE_READS_IN_FLIGHT)
        .scan(false, |failed, read| {
            // Nothing after an error: a reader that went on polling would
            // otherwise get the chunks after a hole.
            let item = (!*failed).then(|| read.map_err(StorageError::Io));
            *failed = item.as_ref().is_some_and(Result::is_err);
            futures::future::ready(item)
        })
        .boxed()
}

/// `len` bytes of `file` from `offset`, read into memory that is not
/// zeroed first (zeroing was a tenth of a large GET's CPU); a file shorter
/// than that is an error.
fn read_chunk(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buffer = Vec::with_capacity(len);
    while buffer.len() < len {
        let at = offset + buffer.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buffer), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    // The spare capacity may hold more than asked for: what is past the
    // range is not the caller's.
    buffer.truncate(len);
    Ok(Bytes::from(buffer))
}

fn with_idle_timeout<S, E>(
    stream: S,
    timeout: Duration,
) -> BoxStream<'static, Result<S::Ok, StorageError>>
where
    S: futures::TryStream<Error = E> + Send + Unpin + 'static,
    S::Ok: Send + 'static,
    StorageError: From<E>,
{
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(timeout, stream.try_next()).await {
            Ok(Ok(Some(item))) => Some((Ok(item), Some(stream))),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => Some((Err(StorageError::from(error)), None)),
            Err(_) => Some((Err(StorageError::Timeout(timeout)), None)),
        }
    })
    .boxed()
}

/// The conformance suite every store must pass: in the unit tests, and
/// for the end-to-end suite's real S3 servers (feature `conformance`).
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_conforms() {
        let storage = Storage::open(&StorageLocation::Memory, conformance::small_parts()).unwrap();
        conformance::check_store(&storage, conformance::ConditionalPuts::Honoured).await;
    }

    #[tokio::test]
    async fn local_store_conforms() {
        let folder = tempfile::tempdir().unwrap();
        let location = StorageLocation::Local(folder.path().to_owned());
        let storage = Storage::open(&location, conformance::small_parts()).unwrap();
        conformance::check_store(&storage, conformance::ConditionalPuts::CreateOnly).await;
    }

    /// Chunks read ahead come back in order, exactly the range asked for;
    /// a file shorter than the range ends the stream with one error.
    #[tokio::test]
    async fn a_local_file_streams_its_range_in_order_and_stops_at_an_error() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("blob");
        let content: Vec<u8> = (0..(5 * FILE_READ_CHUNK + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let open = || std::fs::File::open(&path).unwrap();

        let range = 100..(4 * FILE_READ_CHUNK + 7);
        let chunks: Vec<Bytes> = file_stream(open(), range.clone())
            .try_collect()
            .await
            .unwrap();
        assert!(chunks.len() > FILE_READS_IN_FLIGHT);
        assert_eq!(
            chunks.concat(),
            content[range.start as usize..range.end as usize]
        );

        let past_the_end = (4 * FILE_READ_CHUNK)..(7 * FILE_READ_CHUNK);
        let results: Vec<_> = file_stream(open(), past_the_end).collect().await;
        assert_eq!(results.len(), 2, "one chunk, then the error, then nothing");
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }
}
