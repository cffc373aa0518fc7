//! `cachectl cache restore`: the exact key's save, else the name's newest,
//! written into the folder; only what neither the folder nor the local
//! content store has is downloaded. Packs come whole, or by ranges when
//! little of one is needed, and their files are written as each pack
//! arrives; large contents go through the local store; a version 1
//! manifest's small blobs come in batches.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cache_proto::{Digest, batch};
use futures::StreamExt;

use super::folder::{
    FolderError, FolderSettings, find_save, folder_key, manifest_bytes, miss_report, read_error,
};
use crate::client::cas::Cas;
use crate::client::records::RecordStore;
use crate::folder::manifest::{Content, TreeManifest};
use crate::folder::restore::{self, ContentStore, RestoreError};
use crate::report::outcome::RestoreReport;
use crate::report::progress::Progress;

/// A content's digest and size.
type Sized = (Digest, u64);

/// Large contents downloaded at once.
const PARALLEL_TRANSFERS: usize = 16;
/// Packs (or pack ranges) downloaded and written at once.
const PARALLEL_PACKS: usize = 4;
/// Needed files of a pack closer than this are fetched in one range.
const RANGE_GAP: u64 = 64 * 1024;

/// Downloads `items` into `store`, several at once.
async fn fetch_into_store(
    remote: &Cas,
    store: &ContentStore,
    items: &[(Digest, u64)],
    report: &mut RestoreReport,
    progress: &Progress,
    total: usize,
) -> Result<(), FolderError> {
    let mut downloads = futures::stream::iter(
        items
            .iter()
            .map(|(digest, _)| async move { (*digest, remote.download(digest, store).await) }),
    )
    .buffer_unordered(PARALLEL_TRANSFERS);
    while let Some((digest, result)) = downloads.next().await {
        match result? {
            Some(bytes) => {
                report.downloaded_files += 1;
                report.downloaded_bytes += bytes;
                progress.quick(format!("downloaded {} of {total}", report.downloaded_files));
            }
            None => return Err(FolderError::Restore(RestoreError::Missing(digest))),
        }
    }
    Ok(())
}

/// Writes verified contents to every path of the manifest that holds them.
async fn write_records(
    root: &Path,
    targets: &std::sync::Arc<restore::FilesByDigest>,
    records: Vec<(Digest, Vec<u8>)>,
) -> Result<restore::Applied, FolderError> {
    let root = root.to_owned();
    let targets = targets.clone();
    let error_root = root.clone();
    tokio::task::spawn_blocking(move || -> Result<restore::Applied, RestoreError> {
        let mut applied = restore::Applied::default();
        for (digest, content) in records {
            let Some(paths) = targets.get(&digest) else {
                continue;
            };
            let written = restore::write_deferred(&root, paths, &digest, &content)?;
            applied.files += written.files;
            applied.unchanged += written.unchanged;
        }
        Ok(applied)
    })
    .await
    .map_err(|e| read_error(&error_root, std::io::Error::other(e)))?
    .map_err(FolderError::Restore)
}

/// Uncompressed bytes per batch request.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Groups small items into batches of about [`BATCH_BYTES`] and at most
/// [`batch::MAX_DIGESTS`] items.
fn group(items: impl Iterator<Item = (Digest, u64)>) -> Vec<Vec<(Digest, u64)>> {
    let mut batches: Vec<Vec<(Digest, u64)>> = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let full = batches.last().is_none_or(|last| {
            last.len() >= batch::MAX_DIGESTS || bytes + item.1 + 36 > BATCH_BYTES
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += item.1 + 36;
        if let Some(last) = batches.last_mut() {
            last.push(item);
        }
    }
    batches
}

/// Restores the exact key, else the newest save of the name, into
/// `settings.path`, downloading only what neither the target nor `store`
/// has. A save some of whose objects were evicted restores nothing:
/// [`FolderError::Incomplete`].
pub async fn restore_folder(
    settings: &FolderSettings,
    records: &RecordStore,
    remote: &Cas,
    store: &ContentStore,
) -> Result<RestoreReport, FolderError> {
    let started = Instant::now();
    let progress = Progress::for_stderr();
    let key = folder_key(settings)?;
    let mut report = miss_report(settings);
    progress.quick(format!("looking up {}", settings.name));
    let Some((record, hit)) = find_save(settings, records, &key).await? else {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    let Some(manifest_bytes) = manifest_bytes(remote, store, &record.manifest).await? else {
        // The record outlived its manifest (evicted): a miss.
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    let manifest = TreeManifest::from_json(&manifest_bytes)
        .map_err(|e| FolderError::Usage(format!("the saved manifest is not valid: {e}")))?;
    restore::validate(&manifest)?;
    let root = settings.path.clone();
    let plan = {
        let manifest = manifest.clone();
        let store = store.clone();
        tokio::task::spawn_blocking(move || restore::plan(&root, &manifest, &store))
            .await
            .map_err(|e| read_error(&settings.path, std::io::Error::other(e)))?
    };
    let needed: HashSet<Digest> = plan.needed.iter().map(|(digest, _)| *digest).collect();
    let mut contents: Vec<Content> = manifest.contents();
    let distinct = contents.len();
    contents.retain(|content| needed.contains(&content.digest));
    let fetches = pack_fetches(&manifest, &contents);
    let (small, large): (Vec<Sized>, Vec<Sized>) = contents
        .iter()
        .filter(|content| content.pack.is_none())
        .map(|content| (content.digest, content.size))
        .partition(|(_, size)| *size <= batch::MAX_BLOB);

    // Everything needed must still be there: a save that lost objects to
    // eviction is a miss, not half a folder.
    let objects: Vec<Digest> = fetches
        .iter()
        .map(|fetch| fetch.pack)
        .collect::<HashSet<_>>()
        .into_iter()
        .chain(
            contents
                .iter()
                .filter(|c| c.pack.is_none())
                .map(|c| c.digest),
        )
        .collect();
    let lost = remote.missing(&objects).await?.len();
    if lost > 0 {
        return Err(FolderError::Incomplete {
            key: record.key.to_string(),
            lost,
        });
    }
    if !contents.is_empty() {
        progress.slow(format!(
            "downloading {} contents of {}",
            contents.len(),
            distinct
        ));
    }

    // Large contents go to the local store first; everything else comes
    // after the folders, links and local files are in place and is written
    // straight where it belongs.
    let total = contents.len();
    fetch_into_store(remote, store, &large, &mut report, &progress, total).await?;
    let deferred: HashSet<Digest> = contents
        .iter()
        .filter(|content| content.pack.is_some() || content.size <= batch::MAX_BLOB)
        .map(|content| content.digest)
        .collect();
    let root = settings.path.clone();
    let mut applied = {
        let manifest = manifest.clone();
        let store = store.clone();
        let local = plan.local;
        tokio::task::spawn_blocking(move || {
            restore::apply_except(&root, &manifest, &store, &local, &deferred)
        })
        .await
        .map_err(|e| read_error(&settings.path, std::io::Error::other(e)))??
    };
    let targets = Arc::new(restore::files_by_digest(&manifest));

    let saved_key = record.key.to_string();
    let mut packs = futures::stream::iter(fetches.into_iter().map(|fetch| {
        let targets = targets.clone();
        let root = settings.path.clone();
        let saved_key = saved_key.clone();
        async move {
            let size = fetch.range.end - fetch.range.start;
            let whole = fetch.range.start == 0 && size == fetch.pack_size;
            let range = (!whole).then(|| fetch.range.clone());
            let Some((bytes, received)) = remote.fetch(&fetch.pack, fetch.pack_size, range).await?
            else {
                return Err(FolderError::Incomplete {
                    key: saved_key,
                    lost: 1,
                });
            };
            let files = fetch.files.len() as u64;
            let written = tokio::task::spawn_blocking(move || {
                restore::write_packed(
                    &root,
                    &targets,
                    &fetch.pack,
                    (fetch.range.start, &bytes),
                    &fetch.files,
                )
            })
            .await
            .map_err(|e| read_error(Path::new("."), std::io::Error::other(e)))??;
            Ok((written, files, received))
        }
    }))
    .buffer_unordered(PARALLEL_PACKS);
    while let Some(result) = packs.next().await {
        let (written, files, received) = result?;
        applied.files += written.files;
        applied.unchanged += written.unchanged;
        report.downloaded_files += files;
        report.downloaded_bytes += received;
        progress.quick(format!("downloaded {} of {total}", report.downloaded_files));
    }
    drop(packs);

    // A version 1 manifest's small blobs: in batches, and what the batches
    // left out alone, through the store.
    let batches = group(small.iter().copied());
    let mut received = HashSet::new();
    let mut batch_downloads = futures::stream::iter(batches.iter().map(|items| {
        let digests: Vec<Digest> = items.iter().map(|(d, _)| *d).collect();
        async move { remote.download_batch(&digests).await }
    }))
    .buffer_unordered(4);
    while let Some(result) = batch_downloads.next().await {
        let (records, bytes) = result?;
        report.downloaded_files += records.len() as u64;
        report.downloaded_bytes += bytes;
        received.extend(records.iter().map(|(digest, _)| *digest));
        let written = write_records(&settings.path, &targets, records).await?;
        applied.files += written.files;
        applied.unchanged += written.unchanged;
        progress.quick(format!("downloaded {} of {total}", report.downloaded_files));
    }
    drop(batch_downloads);
    let rest: Vec<(Digest, u64)> = small
        .iter()
        .filter(|(digest, _)| !received.contains(digest))
        .copied()
        .collect();
    fetch_into_store(remote, store, &rest, &mut report, &progress, total).await?;
    for (digest, _) in &rest {
        let path = store.path(digest);
        let content = std::fs::read(&path).map_err(|e| read_error(&path, e))?;
        let written = write_records(&settings.path, &targets, vec![(*digest, content)]).await?;
        applied.files += written.files;
        applied.unchanged += written.unchanged;
    }
    let fetched: u64 = contents.iter().map(|content| content.size).sum();
    report.hit = hit;
    report.restored_key = Some(record.key.to_string());
    report.files = applied.files + applied.unchanged;
    report.written_files = applied.files;
    report.unchanged_files = applied.unchanged;
    report.skipped_bytes = manifest.file_bytes().saturating_sub(fetched);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One download from a pack: a byte range of it and the needed files in
/// that range (digest, offset in the pack, size).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PackFetch {
    pack: Digest,
    pack_size: u64,
    range: Range<u64>,
    files: Vec<(Digest, u64, u64)>,
}

/// The downloads that bring the packed `contents` of `manifest` (a
/// validated one): a pack of which half or more is needed comes whole
/// (one request, compressed on the wire); of the others, only the ranges
/// that hold needed files, nearby files joined.
fn pack_fetches(manifest: &TreeManifest, contents: &[Content]) -> Vec<PackFetch> {
    let mut by_pack: HashMap<usize, Vec<(Digest, u64, u64)>> = HashMap::new();
    for content in contents {
        if let Some(slot) = content.pack {
            by_pack.entry(slot.pack()).or_default().push((
                content.digest,
                slot.offset(),
                content.size,
            ));
        }
    }
    let mut fetches = Vec::new();
    let mut indexes: Vec<usize> = by_pack.keys().copied().collect();
    indexes.sort_unstable();
    for index in indexes {
        let (Some(mut files), Some(pack)) = (by_pack.remove(&index), manifest.packs.get(index))
        else {
            continue;
        };
        files.sort_by_key(|(_, offset, _)| *offset);
        let needed: u64 = files.iter().map(|(_, _, size)| size).sum();
        if needed * 2 >= pack.size {
            fetches.push(PackFetch {
                pack: pack.digest,
                pack_size: pack.size,
                range: 0..pack.size,
                files,
            });
            continue;
        }
        for file in files {
            let end = file.1 + file.2;
            match fetches.last_mut() {
                Some(last) if last.pack == pack.digest && file.1 <= last.range.end + RANGE_GAP => {
                    last.range.end = last.range.end.max(end);
                    last.files.push(file);
                }
                _ => fetches.push(PackFetch {
                    pack: pack.digest,
                    pack_size: pack.size,
                    range: file.1..end,
                    files: vec![file],
                }),
            }
        }
    }
    fetches
}
