//! `cachectl cache save`: scan and hash the folder, keep the packs of the
//! previous save that are still mostly used, pack the other small contents
//! anew, upload what the server lacks, then the manifest, then point the
//! key (and the name's newest entry) at it.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use cache_proto::{Digest, Key};
use futures::StreamExt;

use super::folder::{
    FolderError, FolderRecord, FolderSettings, find_save, folder_key, latest_key, manifest_bytes,
    read_error,
};
use crate::client::cas::Cas;
use crate::client::records::RecordStore;
use crate::folder::manifest::{EntryKind, PackInfo, TreeManifest};
use crate::folder::packs::{self, PACKED_MAX, Source};
use crate::folder::restore::ContentStore;
use crate::folder::scan;
use crate::pack::exclude::Excludes;
use crate::report::outcome::SaveReport;
use crate::report::progress::Progress;

/// Large contents uploaded at once.
const PARALLEL_UPLOADS: usize = 8;
/// Packs built and uploaded at once (building is CPU: reading, hashing and
/// compressing).
const PARALLEL_PACKS: usize = 4;

/// Saves `settings.path` under its key. `store` is the local content store,
/// where the previous save's manifest may already be.
pub async fn save(
    settings: &FolderSettings,
    records: &RecordStore,
    remote: &Cas,
    store: &ContentStore,
) -> Result<SaveReport, FolderError> {
    let started = Instant::now();
    let progress = Progress::for_stderr();
    let key = folder_key(settings)?;
    let root = settings.path.clone();
    progress.quick(format!("hashing {}", root.display()));
    let excludes = Excludes::new(settings.excludes.iter().map(String::as_str))
        .map_err(|e| FolderError::Usage(e.into()))?;
    if !root.is_dir() {
        return Err(FolderError::Usage(format!(
            "--path {} is not a folder",
            root.display()
        )));
    }
    let scanned = tokio::task::spawn_blocking(move || scan::scan(&root, &excludes))
        .await
        .map_err(|e| read_error(&settings.path, std::io::Error::other(e)))?
        .map_err(|e| read_error(&settings.path, e))?;
    let (small, large): (Vec<Source>, Vec<Source>) = scanned
        .sources
        .iter()
        .cloned()
        .partition(|(_, size, _)| *size <= PACKED_MAX);

    // What can stay where it is: the previous save's packs still mostly
    // used, and large contents the server has.
    let candidates = match previous_manifest(settings, records, (remote, store), &key).await? {
        Some(base) => packs::keepable(&base, &small),
        None => Vec::new(),
    };
    let asked: Vec<Digest> = large
        .iter()
        .map(|(digest, _, _)| *digest)
        .chain(candidates.iter().map(|kept| kept.pack.digest))
        .collect();
    let missing: HashSet<Digest> = remote.missing(&asked).await?.into_iter().collect();
    let kept: Vec<packs::Kept> = candidates
        .into_iter()
        .filter(|kept| !missing.contains(&kept.pack.digest))
        .collect();
    let layout = packs::layout(kept, &small);
    let large_uploads: Vec<&Source> = large
        .iter()
        .filter(|(digest, _, _)| missing.contains(digest))
        .collect();
    let packed_files: usize = layout.groups.iter().map(Vec::len).sum();
    let uploaded_files = packed_files + large_uploads.len();
    if uploaded_files > 0 {
        progress.slow(format!(
            "uploading {uploaded_files} new contents of {} ({} already stored)",
            scanned.sources.len(),
            scanned.sources.len() - uploaded_files
        ));
    }

    // New packs, built off the async threads and uploaded as they are
    // ready; their order is their index in the manifest.
    let mut sent = 0u64;
    let mut pack_list: Vec<PackInfo> = layout.kept.clone();
    let mut uploads = futures::stream::iter(layout.groups.iter().map(|group| {
        let group = group.clone();
        async move {
            let (info, bytes) = tokio::task::spawn_blocking(move || packs::build(&group))
                .await
                .map_err(|e| read_error(Path::new("."), std::io::Error::other(e)))?
                .map_err(|e| FolderError::Usage(e.to_string()))?;
            let sent = remote.upload_bytes(&info.digest, bytes).await?;
            Ok::<_, FolderError>((info, sent))
        }
    }))
    .buffered(PARALLEL_PACKS);
    while let Some(result) = uploads.next().await {
        let (info, bytes) = result?;
        sent += bytes;
        pack_list.push(info);
        progress.quick(format!(
            "uploaded {} of {} packs",
            pack_list.len() - layout.kept.len(),
            layout.groups.len()
        ));
    }
    drop(uploads);
    let mut transfers = futures::stream::iter(
        large_uploads
            .iter()
            .map(|(digest, size, path)| remote.upload(digest, *size, path)),
    )
    .buffer_unordered(PARALLEL_UPLOADS);
    while let Some(result) = transfers.next().await {
        sent += result?;
    }
    drop(transfers);

    let entries = scanned
        .manifest
        .entries
        .into_iter()
        .map(|mut entry| {
            if let EntryKind::File { digest, pack, .. } = &mut entry.kind {
                *pack = layout.slots.get(digest).copied();
            }
            entry
        })
        .collect();
    let manifest = TreeManifest::with_packs(pack_list, entries);
    let manifest_json = manifest.to_json();
    let manifest_digest = Digest::of(&manifest_json);
    if !remote.missing(&[manifest_digest]).await?.is_empty() {
        sent += remote.upload_bytes(&manifest_digest, manifest_json).await?;
    }
    let files = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count() as u64;
    let record = FolderRecord {
        name: settings.name.clone(),
        key,
        manifest: manifest_digest,
        files,
        bytes: manifest.file_bytes(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    records.put(&key, &record).await?;
    records
        .put(&latest_key(&settings.name, &settings.platform), &record)
        .await?;
    Ok(SaveReport {
        name: settings.name.clone(),
        key: key.to_string(),
        manifest: manifest_digest.to_string(),
        files,
        bytes: record.bytes,
        uploaded_files: uploaded_files as u64,
        uploaded_bytes: sent,
        uploaded_packs: layout.groups.len() as u64,
        skipped_files: (scanned.sources.len() - uploaded_files) as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The manifest of the save this one follows (the exact key's, else the
/// name's newest); `None` when there is none or it is gone or unreadable.
async fn previous_manifest(
    settings: &FolderSettings,
    records: &RecordStore,
    (remote, store): (&Cas, &ContentStore),
    key: &Key,
) -> Result<Option<TreeManifest>, FolderError> {
    let Some((record, _)) = find_save(settings, records, key).await? else {
        return Ok(None);
    };
    Ok(manifest_bytes(remote, store, &record.manifest)
        .await?
        .and_then(|bytes| TreeManifest::from_json(&bytes).ok()))
}
