//! Streaming blob reads: as stored (zstd passthrough), decompressed, or a
//! byte range that decompresses only the frames it touches.

use std::io;
use std::ops::Range;

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use tokio_util::io::{ReaderStream, StreamReader};

use super::format::{self, Encoding};
use crate::storage::{ByteStream, Storage, StorageError};

/// A response body in the making.
pub type BodyStream = BoxStream<'static, io::Result<Bytes>>;

/// What the index knows about a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLayout {
    /// Uncompressed size.
    pub size: u64,
    /// Stored object size.
    pub stored_size: u64,
    /// Stored encoding.
    pub encoding: Encoding,
}

/// Why a read could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed (or the object vanished).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored object is not in the expected layout.
    #[error(transparent)]
    Format(#[from] format::FormatError),
}

fn into_io(stream: ByteStream) -> BodyStream {
    stream.map_err(io::Error::other).boxed()
}

fn decompress(stored: ByteStream) -> BodyStream {
    let mut decoder = ZstdDecoder::new(StreamReader::new(into_io(stored)));
    decoder.multiple_members(true);
    ReaderStream::new(decoder).boxed()
}

/// The stored object as it is: for a zstd blob, a valid zstd stream.
pub async fn stored(storage: &Storage, path: &Path) -> Result<BodyStream, ReadError> {
    Ok(into_io(storage.stream_from(path, 0).await?))
}

/// The uncompressed content.
pub async fn plain(
    storage: &Storage,
    path: &Path,
    layout: BlobLayout,
) -> Result<BodyStream, ReadError> {
    Ok(match layout.encoding {
        // Nothing follows the header: a ranged read from its end would be
        // refused by some stores.
        Encoding::Bare | Encoding::Raw if layout.size == 0 => futures::stream::empty().boxed(),
        Encoding::Bare | Encoding::Raw => into_io(
            storage
                .stream_from(path, format::content_offset(layout.encoding))
                .await?,
        ),
        Encoding::Zstd => decompress(storage.stream_from(path, 0).await?),
    })
}

/// Uncompressed bytes `range` (non-empty and within the blob).
pub async fn range(
    storage: &Storage,
    path: &Path,
    layout: BlobLayout,
    range: Range<u64>,
) -> Result<BodyStream, ReadError> {
    match layout.encoding {
        Encoding::Bare | Encoding::Raw => {
            let offset = format::content_offset(layout.encoding);
            let stored = (offset + range.start)..(offset + range.end);
            Ok(into_io(storage.stream_range(path, stored).await?))
        }
        Encoding::Zstd => {
            let table_len = format::seek_table_len(layout.size);
            let table_start =
                layout
                    .stored_size
                    .checked_sub(table_len)
                    .ok_or(format::FormatError(
                        "stored size smaller than its seek table",
                    ))?;
            let table = storage
                .read_range(path, table_start..layout.stored_size)
                .await?;
            let frames = format::parse_seek_table(&table)?;
            let plan = format::plan_range(&frames, range)
                .ok_or(format::FormatError("seek table does not cover the range"))?;
            let decoded = decompress(storage.stream_range(path, plan.stored).await?);
            Ok(slice(decoded, plan.skip, plan.take))
        }
    }
}

/// Drops `skip` bytes from the stream, then yields `take` bytes and stops.
fn slice(stream: BodyStream, skip: u64, take: u64) -> BodyStream {
    let state = (stream, skip, take);
    futures::stream::unfold(state, |(mut stream, mut skip, mut take)| async move {
        while take > 0 {
            let mut chunk = match stream.next().await? {
                Ok(chunk) => chunk,
                Err(error) => return Some((Err(error), (stream, 0, 0))),
            };
            let dropped = skip.min(chunk.len() as u64);
            skip -= dropped;
            let _ = chunk.split_to(dropped as usize);
            if chunk.is_empty() {
                continue;
            }
            chunk.truncate(take.min(chunk.len() as u64) as usize);
            take -= chunk.len() as u64;
            return Some((Ok(chunk), (stream, skip, take)));
        }
        None
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slice_skips_and_takes_across_chunks() {
        let chunks: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
            Ok(Bytes::from_static(b"hij")),
        ];
        let stream = futures::stream::iter(chunks).boxed();
        let parts: Vec<Bytes> = slice(stream, 2, 6).try_collect().await.unwrap();
        assert_eq!(parts.concat(), b"cdefgh");
    }
}
