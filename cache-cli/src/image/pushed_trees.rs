//! The app tree this machine last pushed to each repository of a registry
//! that needs no credentials, and the size of its layer. A deploy whose
//! tree differs is about to upload a new layer and config there, so their
//! upload sessions can be opened while the base is still being resolved
//! (see [`super::open_access`]). A hint, never trusted for correctness: a
//! session opened on its word and not used is cancelled. Failures to write
//! are ignored, and a file that is not a whole entry reads as none.

use std::path::PathBuf;

use super::hint_folder::HintFolder;

/// Bytes of an entry: the tree's digest, then the layer's size (LE).
const ENTRY_BYTES: usize = 32 + 8;

/// What was pushed last to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedTree {
    /// The digest of the app's tree (see `pack::tree`).
    pub tree: [u8; 32],
    /// The size of its layer, compressed.
    pub layer_bytes: u64,
}

/// A folder of small files, one per repository.
#[derive(Debug, Clone)]
pub struct PushedTrees {
    folder: HintFolder,
}

impl PushedTrees {
    /// The entries in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            folder: HintFolder::new(dir),
        }
    }

    fn name(repository: &str) -> String {
        HintFolder::hashed_name("cachectl-pushed-tree/v1", &[repository])
    }

    /// What this machine last pushed to `repository` (`host/path`), if
    /// anything.
    pub fn get(&self, repository: &str) -> Option<PushedTree> {
        let bytes = self.folder.read(&Self::name(repository))?;
        let entry: &[u8; ENTRY_BYTES] = bytes.as_slice().try_into().ok()?;
        let (tree, size) = entry.split_at(32);
        Some(PushedTree {
            tree: tree.try_into().ok()?,
            layer_bytes: u64::from_le_bytes(size.try_into().ok()?),
        })
    }

    /// Remembers `pushed` as the last push to `repository`, replacing the
    /// entry whole.
    pub fn insert(&self, repository: &str, pushed: PushedTree) {
        if self.get(repository) == Some(pushed) {
            return;
        }
        let mut entry = Vec::with_capacity(ENTRY_BYTES);
        entry.extend_from_slice(&pushed.tree);
        entry.extend_from_slice(&pushed.layer_bytes.to_le_bytes());
        self.folder.write(&Self::name(repository), &entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_repository_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let trees = PushedTrees::new(dir.path().join("pushed"));
        assert_eq!(trees.get("registry.example/acme/app"), None);
        let first = PushedTree {
            tree: [1; 32],
            layer_bytes: 850,
        };
        trees.insert("registry.example/acme/app", first);
        assert_eq!(trees.get("registry.example/acme/app"), Some(first));
        assert_eq!(trees.get("registry.example/acme/other"), None);
        let second = PushedTree {
            tree: [2; 32],
            layer_bytes: 1 << 40,
        };
        trees.insert("registry.example/acme/app", second);
        assert_eq!(trees.get("registry.example/acme/app"), Some(second));
        // One file per repository, and no staging file left beside it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("pushed"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_torn_or_foreign_file_reads_as_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let trees = PushedTrees::new(dir.path().to_owned());
        let pushed = PushedTree {
            tree: [7; 32],
            layer_bytes: 1,
        };
        trees.insert("r/a", pushed);
        let path = trees.folder.path(&PushedTrees::name("r/a")).unwrap();
        std::fs::write(&path, [7u8; 20]).unwrap();
        assert_eq!(trees.get("r/a"), None);
        std::fs::write(&path, [7u8; 41]).unwrap();
        assert_eq!(trees.get("r/a"), None);
    }

    #[test]
    fn an_unwritable_folder_only_means_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let trees = PushedTrees::new(file.join("pushed"));
        let pushed = PushedTree {
            tree: [3; 32],
            layer_bytes: 9,
        };
        trees.insert("r/a", pushed);
        assert_eq!(trees.get("r/a"), None);
    }
}
