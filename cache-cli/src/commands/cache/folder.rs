//! What a folder save and restore share: the settings of one folder
//! cache, its key, the record an action-cache key points at, and the one
//! error of both.

use cache_proto::Digest;
use std::path::{Path, PathBuf};

use cache_proto::Key;
use serde::{Deserialize, Serialize};

use crate::client::ClientError;
use crate::client::cas::Cas;
use crate::client::records::RecordStore;
use crate::folder::restore::{ContentStore, RestoreError};
use crate::report::outcome::{Hit, RestoreReport};

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
    /// The save found lost objects to eviction: restoring it would leave
    /// the folder half written, so nothing is restored.
    #[error("the save {key} lost {lost} of its objects to eviction; nothing was restored")]
    Incomplete {
        /// The saved key.
        key: String,
        /// Objects gone.
        lost: usize,
    },
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

pub(super) fn read_error(path: &Path, source: std::io::Error) -> FolderError {
    FolderError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// The save to start from: the exact `key`'s (a [`Hit::Exact`]), else the
/// newest save of the name ([`Hit::Partial`]); `None` when there is none.
pub(super) async fn find_save(
    settings: &FolderSettings,
    records: &RecordStore,
    key: &Key,
) -> Result<Option<(FolderRecord, Hit)>, FolderError> {
    if let Some(record) = records.get::<FolderRecord>(key).await? {
        return Ok(Some((record, Hit::Exact)));
    }
    Ok(records
        .get::<FolderRecord>(&latest_key(&settings.name, &settings.platform))
        .await?
        .filter(|record| record.name == settings.name)
        .map(|record| (record, Hit::Partial)))
}

/// The bytes of the manifest `digest`, from the local `store` or downloaded
/// (verified) into it; `None` when the server no longer has it.
pub(super) async fn manifest_bytes(
    remote: &Cas,
    store: &ContentStore,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, FolderError> {
    if !store.contains(digest) && remote.download(digest, store).await?.is_none() {
        return Ok(None);
    }
    let path = store.path(digest);
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| read_error(&path, e))
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
