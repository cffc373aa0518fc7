//! Which base images a target repository is known to hold every layer of.
//! A mark is written after the registry accepted a manifest of that
//! repository that references them (a registry refuses a manifest whose
//! blobs it lacks), so the next deploy on the same base pushes its manifest
//! without asking for each layer first. A mark is a hint, never trusted
//! for correctness: when a manifest pushed on its word is refused (the
//! layers were deleted since, or the folder was copied from elsewhere), the
//! layers are checked and copied as usual and the push is tried once more.
//! Failures to write are ignored: marks only save round trips.

use std::path::PathBuf;

use super::hint_folder::HintFolder;

/// A folder of empty files, one per (repository, base manifest) pair.
#[derive(Debug, Clone)]
pub struct KnownLayers {
    folder: HintFolder,
}

impl KnownLayers {
    /// The marks in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            folder: HintFolder::new(dir),
        }
    }

    fn name(repository: &str, manifest_digest: &str) -> String {
        HintFolder::hashed_name("cachectl-known-layers/v1", &[repository, manifest_digest])
    }

    /// Whether `repository` (`host/path`) is known to hold every layer of
    /// the image whose manifest is `manifest_digest`.
    pub fn contains(&self, repository: &str, manifest_digest: &str) -> bool {
        self.folder
            .contains(&Self::name(repository, manifest_digest))
    }

    /// Marks `repository` as holding every layer of `manifest_digest`.
    pub fn insert(&self, repository: &str, manifest_digest: &str) {
        if !self.contains(repository, manifest_digest) {
            self.folder
                .write(&Self::name(repository, manifest_digest), b"");
        }
    }

    /// Forgets the mark (a manifest pushed on its word was refused).
    pub fn remove(&self, repository: &str, manifest_digest: &str) {
        self.folder.remove(&Self::name(repository, manifest_digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_repository_and_manifest_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownLayers::new(dir.path().join("layers"));
        let base = "sha256:0123";
        assert!(!known.contains("registry.example/acme/app", base));
        known.insert("registry.example/acme/app", base);
        assert!(known.contains("registry.example/acme/app", base));
        assert!(!known.contains("registry.example/acme/other", base));
        assert!(!known.contains("registry.example/acme/app", "sha256:4567"));
        known.remove("registry.example/acme/app", base);
        assert!(!known.contains("registry.example/acme/app", base));
    }

    #[test]
    fn an_unwritable_folder_only_means_no_mark() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let known = KnownLayers::new(file.join("layers"));
        known.insert("registry.example/acme/app", "sha256:0123");
        assert!(!known.contains("registry.example/acme/app", "sha256:0123"));
    }
}
