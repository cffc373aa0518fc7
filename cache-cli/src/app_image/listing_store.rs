//! Where the tree of an app's full layer is kept between deploys: a blob
//! under its BLAKE3, in the cache server's CAS when the records live there
//! (a fresh runner finds it; a record on the server holds at most 1 MiB,
//! and the tree of a large app is more), and in a local folder (this
//! machine's copy, read first; the only one with local records). Read back,
//! a blob is checked against its digest.

use std::path::PathBuf;

use cache_proto::Digest;
use serde::{Deserialize, Serialize};

use super::delta::Listing;
use crate::client::cas::Cas;
use crate::client::records::RecordStore;
use crate::replace_file::replace_file;

/// The trees kept in the local folder, the newest: one per app and base
/// in use is enough, and an older one is on the server (or, with local
/// records, its next deploy is one full layer).
const KEPT_HERE: usize = 16;

/// A stored tree: its blob's digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRef {
    /// BLAKE3 of the blob.
    pub digest: Digest,
    /// The blob's bytes.
    pub size: u64,
}

/// The trees of full layers, on the server and here.
pub(super) struct ListingStore {
    cas: Option<Cas>,
    local: Option<PathBuf>,
}

impl ListingStore {
    /// The store beside `records`: their folder with local records, else
    /// the server's CAS and `here` (this machine's cache folder).
    pub(super) fn new(records: &RecordStore, here: Option<PathBuf>) -> Self {
        let local = match records {
            RecordStore::Local { folder } => Some(folder.join("app-trees")),
            RecordStore::Server(_) => here,
        };
        Self {
            cas: Cas::of(records),
            local,
        }
    }

    fn local_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.local
            .as_ref()
            .map(|folder| folder.join(format!("{digest}.json")))
    }

    /// Stores `listing`; an error says why it could not be.
    pub(super) async fn put(&self, listing: &Listing) -> Result<ListingRef, String> {
        let bytes = serde_json::to_vec(listing).map_err(|e| e.to_string())?;
        let at = ListingRef {
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
        };
        if let Some(path) = self.local_path(&at.digest) {
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| replace_file(&path, &bytes));
            if let Err(error) = written {
                tracing::debug!(%error, path = %path.display(), "could not keep the app's tree here");
            }
            if let Some(folder) = path.parent() {
                prune(folder, KEPT_HERE);
            }
        }
        if let Some(cas) = &self.cas {
            cas.upload_bytes(&at.digest, bytes)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(at)
    }

    /// The tree stored at `at`: from here, else from the server (then kept
    /// here); `None` when neither has it intact.
    pub(super) async fn get(&self, at: &ListingRef) -> Option<Listing> {
        let path = self.local_path(&at.digest);
        if let Some(path) = &path
            && let Ok(bytes) = std::fs::read(path)
            && Digest::of(&bytes) == at.digest
        {
            return serde_json::from_slice(&bytes).ok();
        }
        let (bytes, _) = match self.cas.as_ref()?.fetch(&at.digest, at.size, None).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::debug!(%error, "the app's tree is unreachable");
                return None;
            }
        };
        if Digest::of(&bytes) != at.digest {
            tracing::warn!(digest = %at.digest, "the app's tree from the cache does not match its digest");
            return None;
        }
        if let Some(path) = &path {
            let _ = path.parent().map(std::fs::create_dir_all);
            if let Err(error) = replace_file(path, &bytes) {
                tracing::debug!(%error, "could not keep the app's tree here");
            }
        }
        serde_json::from_slice(&bytes).ok()
    }
}

/// Removes all but the `keep` newest files of `folder` (best effort).
fn prune(folder: &std::path::Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, entry.path()))
        })
        .collect();
    files.sort_by_key(|file| std::cmp::Reverse(file.0));
    for (_, path) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_stored_here_comes_back_and_a_corrupt_copy_does_not() {
        let folder = tempfile::tempdir().unwrap();
        let records = RecordStore::local(folder.path().to_owned());
        let store = ListingStore::new(&records, None);
        let listing: Listing = [("web".to_owned(), super::super::delta::Entry::Dir)].into();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let at = runtime.block_on(store.put(&listing)).unwrap();
        assert_eq!(runtime.block_on(store.get(&at)), Some(listing));
        let path = store.local_path(&at.digest).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(runtime.block_on(store.get(&at)), None);
    }

    #[test]
    fn only_the_newest_trees_are_kept_here() {
        let folder = tempfile::tempdir().unwrap();
        for n in 0..20u64 {
            let path = folder.path().join(format!("{n:02}.json"));
            std::fs::write(&path, b"{}").unwrap();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + n);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        prune(folder.path(), KEPT_HERE);
        let mut left: Vec<String> = std::fs::read_dir(folder.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), KEPT_HERE);
        assert_eq!(left[0], "04.json");
    }
}
