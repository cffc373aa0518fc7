//! Rebuilds the index from storage, the source of truth.
//!
//! Lists `cas/` and `ac/`, reads each object's header (and, for a compressed
//! blob, its seek table) to learn its encoding and uncompressed size, and
//! replaces the index content in one transaction. Objects that are not ours
//! (foreign names, malformed headers) are skipped and counted.

use futures::TryStreamExt;
use object_store::path::Path;

use crate::blob::format::{self, Encoding, HEADER_LEN};
use crate::blob::{OBJECT_PREFIXES, StoredName};
use crate::error::CacheError;
use crate::index::{Index, NewObject};
use crate::storage::{Storage, StorageError};

/// How many objects are inspected at once.
const CONCURRENCY: usize = 16;

/// What a reindex found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReindexReport {
    /// CAS blobs indexed.
    pub blobs: u64,
    /// Action-cache entries indexed.
    pub actions: u64,
    /// Compatibility-protocol entries found.
    pub entries: u64,
    /// Objects skipped because they are not in our layout.
    pub skipped: u64,
}

/// Rebuilds `index` from `storage`.
pub async fn reindex(storage: &Storage, index: &Index) -> Result<ReindexReport, CacheError> {
    let mut report = ReindexReport::default();
    let mut rows = Vec::new();
    for prefix in OBJECT_PREFIXES {
        let described: Vec<_> = storage
            .list(&Path::from(prefix))
            .map_ok(|listed| describe(storage, listed.path, listed.size))
            .try_buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for entry in described {
            match entry {
                Some((name @ StoredName::Blob(_), object)) => {
                    report.blobs += 1;
                    rows.push((name, object));
                }
                Some((name @ StoredName::Action(..), object)) => {
                    report.actions += 1;
                    rows.push((name, object));
                }
                Some((name @ StoredName::Entry(..), object)) => {
                    report.entries += 1;
                    rows.push((name, object));
                }
                None => report.skipped += 1,
            }
        }
    }
    index.replace_all(rows).await?;
    Ok(report)
}

/// The index row storage implies for `name`, or `None` when storage has no
/// such object (or only a malformed one).
pub async fn describe_one(
    storage: &Storage,
    name: &StoredName,
) -> Result<Option<NewObject>, StorageError> {
    let path = name.path();
    let Some(stored_size) = storage.size(&path).await? else {
        return Ok(None);
    };
    match describe(storage, path, stored_size).await {
        Ok(described) => Ok(described.map(|(_, object)| object)),
        // Deleted between the two reads.
        Err(StorageError::NotFound) => Ok(None),
        Err(other) => Err(other),
    }
}

async fn describe(
    storage: &Storage,
    path: Path,
    stored_size: u64,
) -> Result<Option<(StoredName, NewObject)>, StorageError> {
    let Some(name) = StoredName::from_path(&path) else {
        tracing::warn!(%path, "skipping an object that is not in the cache layout");
        return Ok(None);
    };
    let object = match name {
        StoredName::Action(..) => storage
            .read_small(&path)
            .await?
            .map(|value| NewObject::action(&value)),
        StoredName::Blob(_) | StoredName::Entry(..) => {
            match blob_size(storage, &path, stored_size).await? {
                Ok((encoding, size)) => Some(NewObject {
                    size,
                    stored_size,
                    encoding,
                    etag: None,
                    meta: None,
                    // Storage does not say who stored a blob: a rebuilt
                    // index charges blobs to the default namespace.
                    owner: None,
                }),
                Err(error) => {
                    tracing::warn!(%path, %error, "skipping a malformed blob");
                    None
                }
            }
        }
    };
    Ok(object.map(|object| (name, object)))
}

async fn blob_size(
    storage: &Storage,
    path: &Path,
    stored_size: u64,
) -> Result<Result<(Encoding, u64), format::FormatError>, StorageError> {
    let start = if stored_size == 0 {
        bytes::Bytes::new()
    } else {
        storage
            .read_range(path, 0..stored_size.min(HEADER_LEN))
            .await?
    };
    let encoding = match format::stored_encoding(&start) {
        Ok(encoding) => encoding,
        Err(error) => return Ok(Err(error)),
    };
    match encoding {
        Encoding::Bare => return Ok(Ok((encoding, stored_size))),
        Encoding::Raw => return Ok(Ok((encoding, stored_size - HEADER_LEN))),
        Encoding::Zstd => {}
    }
    let footer_start = stored_size.saturating_sub(9).max(HEADER_LEN);
    let footer = storage.read_range(path, footer_start..stored_size).await?;
    let frames = match format::seek_footer_frames(&footer) {
        Ok(frames) => u64::from(frames),
        Err(error) => return Ok(Err(error)),
    };
    let table_len = 8 + frames * 8 + 9;
    let Some(table_start) = stored_size
        .checked_sub(table_len)
        .filter(|s| *s >= HEADER_LEN)
    else {
        return Ok(Err(format::FormatError("seek table longer than the blob")));
    };
    let table = storage.read_range(path, table_start..stored_size).await?;
    Ok(format::parse_seek_table(&table).map(|frames| {
        let size = frames.iter().map(|f| u64::from(f.decompressed)).sum();
        (encoding, size)
    }))
}
