//! Verified, streaming blob uploads.
//!
//! The body is read in [`FRAME_SIZE`] chunks. Each chunk is hashed (and, when
//! the blob is stored compressed, compressed into one zstd frame) off the
//! async threads and handed to an [`ObjectWriter`]; the object is published
//! only when the BLAKE3 of everything read equals the digest the client
//! named. Memory stays bounded by a few chunks plus the writer's parts,
//! whatever the blob size.

use std::io;

use cache_proto::Digest;
use object_store::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::format::{self, Encoding, FRAME_SIZE, FrameEntry};
use crate::storage::{Storage, StorageError};

/// A compressed first chunk must be at most this share of its size
/// (in tenths) for the blob to be stored compressed.
const WORTH_COMPRESSING_TENTHS: usize = 9;

/// Limits and settings of one upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadSettings {
    /// Largest accepted blob, uncompressed, in bytes.
    pub max_size: u64,
    /// zstd level for stored frames.
    pub zstd_level: i32,
}

/// What was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    /// Uncompressed size.
    pub size: u64,
    /// Size of the stored object.
    pub stored_size: u64,
    /// Encoding of the stored object.
    pub encoding: Encoding,
}

/// What the content must hash to before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCheck {
    /// BLAKE3 (native blobs, Bazel with `--digest_function=blake3`).
    Blake3(Digest),
    /// SHA-256 (Bazel's default digest function).
    Sha256([u8; 32]),
    /// An opaque key: nothing to verify.
    Unverified,
}

/// A running hash for a [`ContentCheck`].
enum Hashing {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
    None,
}

impl Hashing {
    fn for_check(check: ContentCheck) -> Self {
        match check {
            ContentCheck::Blake3(_) => Self::Blake3(Box::default()),
            ContentCheck::Sha256(_) => Self::Sha256(sha2::Sha256::default()),
            ContentCheck::Unverified => Self::None,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Blake3(hasher) => {
                hasher.update(data);
            }
            Self::Sha256(hasher) => sha2::Digest::update(hasher, data),
            Self::None => {}
        }
    }

    /// `Err((expected, actual))` in hex when the content is not what was named.
    fn verify(self, check: ContentCheck) -> Result<(), (String, String)> {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match (self, check) {
            (Self::Blake3(hasher), ContentCheck::Blake3(expected)) => {
                let actual = Digest::from(hasher.finalize());
                (actual == expected)
                    .then_some(())
                    .ok_or((expected.to_string(), actual.to_string()))
            }
            (Self::Sha256(hasher), ContentCheck::Sha256(expected)) => {
                let actual: [u8; 32] = sha2::Digest::finalize(hasher).into();
                (actual == expected)
                    .then_some(())
                    .ok_or((hex(&expected), hex(&actual)))
            }
            _ => Ok(()),
        }
    }
}

/// Why an upload was not stored. In every case nothing became visible.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body does not hash to the digest in the path.
    #[error("content digest {actual} does not match {expected}")]
    Mismatch {
        /// Digest named by the client, hex.
        expected: String,
        /// Digest of the body received, hex.
        actual: String,
    },
    /// The (uncompressed) body exceeds the size limit.
    #[error("blob exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be read: the client went away or sent malformed zstd.
    #[error("could not read the request body: {0}")]
    Body(#[source] io::Error),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Streams `body` (uncompressed content) into storage under `path`, publishing
/// only if it passes `check`. With `replace`, an existing object under `path`
/// is atomically replaced; without, it is kept (content addresses hold the
/// same bytes).
pub async fn store_verified<R>(
    storage: &Storage,
    path: Path,
    check: ContentCheck,
    mut body: R,
    settings: UploadSettings,
    replace: bool,
) -> Result<StoredBlob, UploadError>
where
    R: AsyncRead + Unpin,
{
    let mut writer = storage.writer(path);
    if replace {
        writer.replace_existing();
    }
    let result = stream_into(&mut writer, check, &mut body, settings).await;
    match result {
        Ok((size, encoding)) => {
            let stored_size = writer.written();
            writer.publish().await?;
            Ok(StoredBlob {
                size,
                stored_size,
                encoding,
            })
        }
        Err(error) => {
            writer.abort().await;
            Err(error)
        }
    }
}

async fn stream_into<R>(
    writer: &mut crate::storage::ObjectWriter,
    check: ContentCheck,
    body: &mut R,
    settings: UploadSettings,
) -> Result<(u64, Encoding), UploadError>
where
    R: AsyncRead + Unpin,
{
    let mut hasher = Hashing::for_check(check);
    let mut encoding = None;
    let mut frames = Vec::new();
    let mut size = 0u64;
    loop {
        let chunk = read_chunk(body, FRAME_SIZE)
            .await
            .map_err(UploadError::Body)?;
        size += chunk.len() as u64;
        if size > settings.max_size {
            return Err(UploadError::TooLarge {
                limit: settings.max_size,
            });
        }
        let last = chunk.len() < FRAME_SIZE;
        let try_compress =
            !matches!(encoding, Some(Encoding::Raw | Encoding::Bare)) && !chunk.is_empty();
        let level = settings.zstd_level;
        let work = tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            let compressed = try_compress
                .then(|| zstd::bulk::compress(&chunk, level))
                .transpose();
            (hasher, chunk, compressed)
        });
        let (returned, chunk, compressed) = work
            .await
            .map_err(|e| UploadError::Body(io::Error::other(e)))?;
        hasher = returned;
        let compressed = compressed.map_err(UploadError::Body)?;
        let first = encoding.is_none();
        let chosen = *encoding.get_or_insert_with(|| match &compressed {
            Some(frame) if frame.len() * 10 <= chunk.len() * WORTH_COMPRESSING_TENTHS => {
                Encoding::Zstd
            }
            _ if chunk.is_empty() || format::starts_like_header(&chunk) => Encoding::Raw,
            _ => Encoding::Bare,
        });
        if first && chosen != Encoding::Bare {
            writer.write(&format::header(chosen)).await?;
        }
        match (chosen, compressed) {
            (Encoding::Zstd, Some(frame)) => {
                writer.write(&frame).await?;
                frames.push(FrameEntry {
                    compressed: frame.len() as u32,
                    decompressed: chunk.len() as u32,
                });
            }
            _ => writer.write(&chunk).await?,
        }
        if last {
            break;
        }
    }
    hasher
        .verify(check)
        .map_err(|(expected, actual)| UploadError::Mismatch { expected, actual })?;
    let encoding = encoding.unwrap_or(Encoding::Raw);
    if encoding == Encoding::Zstd {
        writer.write(&format::seek_table(&frames)).await?;
    }
    Ok((size, encoding))
}

/// Reads until `capacity` bytes or the end of the body.
async fn read_chunk<R: AsyncRead + Unpin>(body: &mut R, capacity: usize) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(capacity);
    while chunk.len() < capacity {
        let wanted = (capacity - chunk.len()) as u64;
        if (&mut *body).take(wanted).read_buf(&mut chunk).await? == 0 {
            break;
        }
    }
    Ok(chunk)
}
