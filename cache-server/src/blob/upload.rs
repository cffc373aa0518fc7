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
use super::reframe::{self, MAX_HELD_FRAME, PlainSink, ReframeError, Reframer};
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

impl PlainSink for Hashing {
    fn update(&mut self, plain: &[u8]) {
        Hashing::update(self, plain);
    }
}

/// An upload's body as it arrives.
pub enum Body<R> {
    /// The content itself.
    Plain(R),
    /// The content as zstd frames (`Content-Encoding: zstd`): frames in the
    /// stored layout are stored as sent (see [`reframe`]).
    Zstd(R),
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

/// Streams `body` into storage under `path`, publishing only if its content
/// passes `check`. With `replace`, an existing object under `path`
/// is atomically replaced; without, it is kept (content addresses hold the
/// same bytes).
pub async fn store_verified<R>(
    storage: &Storage,
    path: Path,
    check: ContentCheck,
    body: Body<R>,
    settings: UploadSettings,
    replace: bool,
) -> Result<StoredBlob, UploadError>
where
    R: AsyncRead + Unpin + Send,
{
    let mut writer = storage.writer(path);
    if replace {
        writer.replace_existing();
    }
    let result = match body {
        Body::Plain(mut body) => stream_into(&mut writer, check, &mut body, settings).await,
        Body::Zstd(body) => stream_zstd_into(&mut writer, check, body, settings).await,
    };
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

/// Stores a zstd body in the stored zstd layout: whole frames are cut from
/// the wire and handed to a [`Reframer`] (which keeps conforming frames as
/// sent); input that cannot be cut into frames of at most
/// [`MAX_HELD_FRAME`] bytes is decompressed as a stream instead.
async fn stream_zstd_into<R>(
    writer: &mut crate::storage::ObjectWriter,
    check: ContentCheck,
    mut body: R,
    settings: UploadSettings,
) -> Result<(u64, Encoding), UploadError>
where
    R: AsyncRead + Unpin + Send,
{
    let mut reframer = Reframer::new(
        settings.zstd_level,
        settings.max_size,
        Hashing::for_check(check),
    );
    let mut written = Written::default();
    let mut wire: Vec<u8> = Vec::with_capacity(2 * FRAME_SIZE);
    let mut ended = false;
    loop {
        while let Some(length) = reframe::first_frame_len(&wire) {
            let frame: Vec<u8> = wire.drain(..length).collect();
            reframer = written
                .step(writer, reframer, move |r| r.frame(frame))
                .await?;
        }
        if ended || wire.len() > MAX_HELD_FRAME {
            break;
        }
        let wanted = (2 * FRAME_SIZE).saturating_sub(wire.len()).max(64 * 1024) as u64;
        if (&mut body)
            .take(wanted)
            .read_buf(&mut wire)
            .await
            .map_err(UploadError::Body)?
            == 0
        {
            ended = true;
        }
    }
    if !wire.is_empty() && !ended {
        // A frame larger than a stored one: decode the rest as a stream.
        let rest = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(wire), body);
        let mut decoder =
            async_compression::tokio::bufread::ZstdDecoder::new(tokio::io::BufReader::new(rest));
        decoder.multiple_members(true);
        loop {
            let chunk = read_chunk(&mut decoder, FRAME_SIZE)
                .await
                .map_err(UploadError::Body)?;
            let last = chunk.len() < FRAME_SIZE;
            reframer = written
                .step(writer, reframer, move |r| r.plain(chunk))
                .await?;
            if last {
                break;
            }
        }
    } else if !wire.is_empty() {
        return Err(UploadError::Body(io::Error::new(
            io::ErrorKind::InvalidData,
            "the zstd body ends inside a frame",
        )));
    }
    let finished = tokio::task::spawn_blocking(move || reframer.finish())
        .await
        .map_err(|e| UploadError::Body(io::Error::other(e)))?
        .map_err(reframe_error)?;
    let Some(encoding) = finished.encoding else {
        // Nothing at all: an empty blob is stored raw, as a plain upload's.
        finished
            .sink
            .verify(check)
            .map_err(|(expected, actual)| UploadError::Mismatch { expected, actual })?;
        writer.write(&format::header(Encoding::Raw)).await?;
        return Ok((0, Encoding::Raw));
    };
    written.write(writer, encoding, finished.outputs).await?;
    finished
        .sink
        .verify(check)
        .map_err(|(expected, actual)| UploadError::Mismatch { expected, actual })?;
    if encoding == Encoding::Zstd {
        writer.write(&format::seek_table(&written.table)).await?;
    }
    Ok((finished.size, encoding))
}

/// What a zstd upload has written so far.
#[derive(Default)]
struct Written {
    /// Whether the header (if any) is written.
    started: bool,
    /// The seek table of the frames written.
    table: Vec<FrameEntry>,
}

impl Written {
    /// Runs `step` on `reframer` off the async threads and writes what it
    /// produced; hands the reframer back.
    async fn step<F>(
        &mut self,
        writer: &mut crate::storage::ObjectWriter,
        mut reframer: Reframer<Hashing>,
        step: F,
    ) -> Result<Reframer<Hashing>, UploadError>
    where
        F: FnOnce(&mut Reframer<Hashing>) -> Result<Vec<reframe::Output>, ReframeError>
            + Send
            + 'static,
    {
        let (reframer, outputs) = tokio::task::spawn_blocking(move || {
            let outputs = step(&mut reframer);
            (reframer, outputs)
        })
        .await
        .map_err(|e| UploadError::Body(io::Error::other(e)))?;
        let outputs = outputs.map_err(reframe_error)?;
        if let Some(encoding) = reframer.encoding() {
            self.write(writer, encoding, outputs).await?;
        }
        Ok(reframer)
    }

    /// Writes `outputs`, the header first.
    async fn write(
        &mut self,
        writer: &mut crate::storage::ObjectWriter,
        encoding: Encoding,
        outputs: Vec<reframe::Output>,
    ) -> Result<(), UploadError> {
        for output in outputs {
            if !self.started {
                self.started = true;
                if encoding != Encoding::Bare {
                    writer.write(&format::header(encoding)).await?;
                }
            }
            match output {
                reframe::Output::Frame(frame, entry) => {
                    writer.write(&frame).await?;
                    self.table.push(entry);
                }
                reframe::Output::Plain(bytes) => writer.write(&bytes).await?,
            }
        }
        Ok(())
    }
}

fn reframe_error(error: ReframeError) -> UploadError {
    match error {
        ReframeError::TooLarge(limit) => UploadError::TooLarge { limit },
        ReframeError::Invalid(message) => {
            UploadError::Body(io::Error::new(io::ErrorKind::InvalidData, message))
        }
    }
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
