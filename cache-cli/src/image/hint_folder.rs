//! A folder of small files that only save round trips: the digest cache,
//! the layers a repository is known to hold, the tree last pushed. Each
//! file is named by hex (a digest's, or the BLAKE3 of its key, so no key
//! reaches outside the folder); a file is replaced whole (never seen half
//! written); a failure to write is logged at debug level and otherwise
//! ignored, and a file that cannot be read is simply not there.

use std::path::PathBuf;

use crate::replace_file::replace_file;

/// The folder.
#[derive(Debug, Clone)]
pub struct HintFolder {
    dir: PathBuf,
}

impl HintFolder {
    /// The files in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The name of the file of `key` in a folder of `kind` (e.g.
    /// `cachectl-known-layers/v1`): the BLAKE3 of both, in hex.
    pub fn hashed_name(kind: &str, key: &[&str]) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(kind.as_bytes());
        for part in key {
            hasher.update(b"\0");
            hasher.update(part.as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }

    /// The path of the file `name` (hex only, so always inside the folder).
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        let hex = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| self.dir.join(name.to_ascii_lowercase()))
    }

    /// The bytes of `name`, if it is there.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(name)?).ok()
    }

    /// Whether `name` is there.
    pub fn contains(&self, name: &str) -> bool {
        self.path(name).is_some_and(|path| path.is_file())
    }

    /// Makes `name` hold `bytes`, replaced whole; a failure is only logged.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        let Some(path) = self.path(name) else {
            return;
        };
        if let Err(error) = replace_file(&path, bytes) {
            tracing::debug!(%error, path = %path.display(), "could not keep a hint");
        }
    }

    /// Forgets `name`.
    pub fn remove(&self, name: &str) {
        if let Some(path) = self.path(name) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hex_and_files_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let folder = HintFolder::new(dir.path().join("hints"));
        let name = HintFolder::hashed_name("test/v1", &["r.io/acme/app", "sha256:01"]);
        assert_ne!(
            name,
            HintFolder::hashed_name("test/v1", &["r.io/acme/app", "sha256:02"])
        );
        assert_ne!(
            name,
            HintFolder::hashed_name("test/v1", &["r.io/acme/appsha256:01"])
        );
        assert!(!folder.contains(&name));
        folder.write(&name, b"one");
        folder.write(&name, b"two");
        assert_eq!(folder.read(&name).as_deref(), Some(&b"two"[..]));
        folder.remove(&name);
        assert!(folder.read(&name).is_none());
        for bad in ["../x", "", "a/b", "zz"] {
            folder.write(bad, b"x");
            assert!(folder.read(bad).is_none(), "{bad}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("hints")).unwrap().count(),
            0
        );
    }

    #[test]
    fn an_unwritable_folder_only_means_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let folder = HintFolder::new(file.join("hints"));
        folder.write("ab", b"x");
        assert!(!folder.contains("ab"));
    }
}
