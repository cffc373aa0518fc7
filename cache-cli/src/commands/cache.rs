//! `cachectl cache save` and `cachectl cache restore`: keys, the record an
//! action-cache key points at, and the two operations end to end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cache_proto::{Digest, Key, batch};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Failure, records_for};
use crate::cli::config::ConfigFile;
use crate::cli::{CacheCommand, Cli};
use crate::client::ClientError;
use crate::client::cas::Cas;
use crate::client::records::RecordStore;
use crate::folder::manifest::TreeManifest;
use crate::folder::restore::{self, ContentStore, RestoreError};
use crate::folder::scan;
use crate::image::oci::Platform;
use crate::pack::exclude::Excludes;
use crate::report::outcome::{Hit, RestoreReport, SaveReport};
use crate::report::output;
use crate::report::progress::Progress;

/// Transfers in flight at once.
const PARALLEL_TRANSFERS: usize = 16;

/// What one save or restore works on.
#[derive(Debug, Clone)]
pub struct FolderSettings {
    /// The cache's name, e.g. `npm` (also the `restore-keys` family).
    pub name: String,
    /// Files whose content decides the key, relative to the working directory.
    pub key_files: Vec<PathBuf>,
    /// The folder saved or restored.
    pub path: PathBuf,
    /// Patterns left out when saving (Docker's `.dockerignore` syntax).
    pub excludes: Vec<String>,
    /// Anything else that should change the key (e.g. a tool version).
    pub key_extra: String,
    /// Target platform, part of the key.
    pub platform: String,
}

/// Why a save or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// A flag or key file is wrong.
    #[error("{0}")]
    Usage(String),
    /// The cache server failed or could not be reached.
    #[error(transparent)]
    Cache(#[from] ClientError),
    /// Reading the folder failed.
    #[error("reading {path}: {source}")]
    Read {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the folder back failed or was refused.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// What an action-cache key points at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderRecord {
    /// The cache's name.
    pub name: String,
    /// The exact key.
    pub key: Key,
    /// The tree manifest, a CAS blob.
    pub manifest: Digest,
    /// Files in the folder.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created: u64,
}

/// The exact key: BLAKE3 of the name, the platform, the extra text and the
/// content of every key file (sorted by path).
pub fn folder_key(settings: &FolderSettings) -> Result<Key, FolderError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-folder-key/v1\n");
    for part in [&settings.name, &settings.platform, &settings.key_extra] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut files = settings.key_files.clone();
    files.sort();
    for file in files {
        let content = std::fs::read(&file).map_err(|source| {
            FolderError::Usage(format!("key file {}: {source}", file.display()))
        })?;
        let name = file.to_string_lossy();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(blake3::hash(&content).as_bytes());
    }
    Ok(Key::from_bytes(*hasher.finalize().as_bytes()))
}

/// The key under which the newest save of `name` is also recorded.
pub fn latest_key(name: &str, platform: &str) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-folder-latest/v1\0");
    hasher.update(name.as_bytes());
    hasher.update(b"\0");
    hasher.update(platform.as_bytes());
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Saves `settings.path` under its key: uploads only the contents the
/// server lacks, then the manifest, then points the key (and the name's
/// newest entry) at it.
pub async fn save(
    settings: &FolderSettings,
    records: &RecordStore,
    remote: &Cas,
) -> Result<SaveReport, FolderError> {
    let started = Instant::now();
    let progress = Progress::for_stderr();
    let key = folder_key(settings)?;
    let root = settings.path.clone();
    progress.quick(format!("hashing {}", root.display()));
    let excludes =
        Excludes::new(settings.excludes.iter().map(String::as_str)).map_err(FolderError::Usage)?;
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
    let wanted: Vec<Digest> = scanned.sources.iter().map(|(d, _, _)| *d).collect();
    let missing: std::collections::HashSet<Digest> =
        remote.missing(&wanted).await?.into_iter().collect();
    let uploads: Vec<_> = scanned
        .sources
        .iter()
        .filter(|(digest, _, _)| missing.contains(digest))
        .collect();
    let mut sent = 0u64;
    let total = uploads.len();
    let mut done = 0usize;
    if total > 0 {
        progress.slow(format!(
            "uploading {total} new contents of {} ({} already stored)",
            scanned.sources.len(),
            scanned.sources.len() - total
        ));
    }
    // Small files travel in batches (one request per ~8 MiB of them),
    // large ones one by one, streamed.
    let (small, large): (Vec<_>, Vec<_>) = uploads
        .iter()
        .copied()
        .partition(|(_, size, _)| *size <= batch::MAX_BLOB);
    let batches = group(
        small
            .iter()
            .map(|(digest, size, path)| (*digest, *size, path.clone())),
    );
    let batch_uploads = batches.iter().map(|items| {
        let items: Vec<(Digest, PathBuf)> = items.iter().map(|(d, _, p)| (*d, p.clone())).collect();
        async move { remote.upload_batch(&items).await }
    });
    let mut transfers = futures::stream::iter(batch_uploads).buffer_unordered(4);
    while let Some(result) = transfers.next().await {
        sent += result?;
    }
    drop(transfers);
    let mut transfers = futures::stream::iter(
        large
            .iter()
            .map(|(digest, size, path)| remote.upload(digest, *size, path)),
    )
    .buffer_unordered(PARALLEL_TRANSFERS);
    while let Some(result) = transfers.next().await {
        sent += result?;
        done += 1;
        progress.quick(format!("uploaded {done} of {total} contents"));
    }
    drop(transfers);
    let manifest_json = scanned.manifest.to_json();
    let manifest_digest = Digest::of(&manifest_json);
    let staged = tempfile::NamedTempFile::new().map_err(|e| read_error(Path::new("."), e))?;
    std::fs::write(staged.path(), &manifest_json).map_err(|e| read_error(staged.path(), e))?;
    if !remote.missing(&[manifest_digest]).await?.is_empty() {
        sent += remote
            .upload(&manifest_digest, manifest_json.len() as u64, staged.path())
            .await?;
    }
    let files = scanned
        .manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, crate::folder::manifest::EntryKind::File { .. }))
        .count() as u64;
    let record = FolderRecord {
        name: settings.name.clone(),
        key,
        manifest: manifest_digest,
        files,
        bytes: scanned.manifest.file_bytes(),
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
        uploaded_files: uploads.len() as u64,
        uploaded_bytes: sent,
        skipped_files: (scanned.sources.len() - uploads.len()) as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

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
fn group(items: impl Iterator<Item = (Digest, u64, PathBuf)>) -> Vec<Vec<(Digest, u64, PathBuf)>> {
    let mut batches: Vec<Vec<(Digest, u64, PathBuf)>> = Vec::new();
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

fn read_error(path: &Path, source: std::io::Error) -> FolderError {
    FolderError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// The report of a restore that found nothing (also when the cache could
/// not be reached).
pub fn miss_report(settings: &FolderSettings) -> RestoreReport {
    RestoreReport {
        name: settings.name.clone(),
        key: folder_key(settings)
            .map(|k| k.to_string())
            .unwrap_or_default(),
        hit: Hit::Miss,
        restored_key: None,
        files: 0,
        written_files: 0,
        unchanged_files: 0,
        downloaded_files: 0,
        downloaded_bytes: 0,
        skipped_bytes: 0,
        seconds: 0.0,
    }
}

/// Restores the exact key, else the newest save of the name, into
/// `settings.path`, downloading only what neither the target nor `store`
/// has.
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
    let (record, hit) = match records.get::<FolderRecord>(&key).await? {
        Some(record) => (record, Hit::Exact),
        None => match records
            .get::<FolderRecord>(&latest_key(&settings.name, &settings.platform))
            .await?
        {
            Some(record) if record.name == settings.name => (record, Hit::Partial),
            _ => {
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
        },
    };
    if !store.contains(&record.manifest)
        && remote.download(&record.manifest, store).await?.is_none()
    {
        // The record outlived its manifest (evicted): a miss.
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let manifest_bytes = std::fs::read(store.path(&record.manifest))
        .map_err(|e| read_error(&store.path(&record.manifest), e))?;
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
    let needed = plan.needed;
    let total = needed.len();
    if total > 0 {
        progress.slow(format!(
            "downloading {total} contents of {}",
            manifest.blobs().len()
        ));
    }
    // Large contents go to the local store first, one by one; small ones
    // come in batches and are written straight into place.
    let (small, large): (Vec<_>, Vec<_>) = needed
        .iter()
        .copied()
        .partition(|(_, size)| *size <= batch::MAX_BLOB);
    fetch_into_store(remote, store, &large, &mut report, &progress, total).await?;
    let deferred: std::collections::HashSet<Digest> = small.iter().map(|(d, _)| *d).collect();
    let root = settings.path.clone();
    let mut applied = {
        let manifest = manifest.clone();
        let store = store.clone();
        let local = plan.local;
        let deferred = deferred.clone();
        tokio::task::spawn_blocking(move || {
            restore::apply_except(&root, &manifest, &store, &local, &deferred)
        })
        .await
        .map_err(|e| read_error(&settings.path, std::io::Error::other(e)))??
    };
    let targets = std::sync::Arc::new(restore::files_by_digest(&manifest));
    let batches = group(
        small
            .iter()
            .map(|(digest, size)| (*digest, *size, PathBuf::new())),
    );
    let mut received = std::collections::HashSet::new();
    let mut batch_downloads = futures::stream::iter(batches.iter().map(|items| {
        let digests: Vec<Digest> = items.iter().map(|(d, _, _)| *d).collect();
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
    // What the batches left out comes alone, through the store.
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
    let fetched: u64 = needed.iter().map(|(_, size)| size).sum();
    report.hit = hit;
    report.restored_key = Some(record.key.to_string());
    report.files = applied.files + applied.unchanged;
    report.written_files = applied.files;
    report.unchanged_files = applied.unchanged;
    report.skipped_bytes = manifest.file_bytes().saturating_sub(fetched);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `cachectl cache save|restore`. The cache is an accelerator: an
/// unreachable server is a warning (a skipped save, a miss) unless
/// `--require-cache`.
pub async fn run(cli: &Cli, file: &ConfigFile, action: &CacheCommand) -> Result<(), Failure> {
    let flags = match action {
        CacheCommand::Save(flags) | CacheCommand::Restore(flags) => flags,
    };
    let records = records_for(cli, file)?;
    let Some(remote) = Cas::of(&records) else {
        return Err(Failure::usage(anyhow::anyhow!(
            "cachectl cache needs a cache server: --cache URL or `cache` in cachectl.toml"
        )));
    };
    let platform = match &cli.base.platform {
        Some(text) => Platform::parse(text)
            .map_err(|m| Failure::usage(anyhow::anyhow!("--platform: {m}")))?
            .to_string(),
        None => Platform::host().to_string(),
    };
    let settings = FolderSettings {
        name: flags.name.clone(),
        key_files: flags.key_files.clone(),
        path: flags.path.clone(),
        excludes: flags.excludes.clone(),
        key_extra: flags.key_extra.clone(),
        platform,
    };
    let failure = |error: FolderError| match error {
        FolderError::Usage(_) => Failure::usage(error),
        FolderError::Cache(_) if cli.require_cache => Failure::new(3, error),
        FolderError::Cache(_) | FolderError::Read { .. } | FolderError::Restore(_) => {
            Failure::failed(error)
        }
    };
    match action {
        CacheCommand::Save(_) => match save(&settings, &records, &remote).await {
            Ok(report) => output::report_folder_save(&report, cli.json),
            Err(FolderError::Cache(error)) if !cli.require_cache => {
                eprintln!("warning: the folder was not saved: {error}");
                Ok(())
            }
            Err(error) => return Err(failure(error)),
        },
        CacheCommand::Restore(_) => {
            let store = ContentStore::new(cli.cachectl_dir().join("content"));
            match restore_folder(&settings, &records, &remote, &store).await {
                Ok(report) => output::report_folder_restore(&report, cli.json),
                Err(FolderError::Cache(error)) if !cli.require_cache => {
                    eprintln!("warning: nothing restored: {error}");
                    output::report_folder_restore(&miss_report(&settings), cli.json)
                }
                Err(error) => return Err(failure(error)),
            }
        }
    }
    .map_err(Failure::failed)
}
