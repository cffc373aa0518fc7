//! Manifests and image configs by digest, kept on this machine: what a
//! digest names never changes, so a deploy on a machine that deployed before
//! reads its base's manifest and config here instead of asking the
//! registry. Every read is checked against the digest (a changed or cut file
//! is a miss, never wrong content); only `sha256:` digests of 64 hex digits
//! name files, so a digest cannot reach outside the folder. Failures to
//! write are ignored: the cache only saves round trips.

use std::path::PathBuf;

use super::hint_folder::HintFolder;
use super::oci;

/// Largest object kept (manifests and configs are kilobytes).
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// A folder of objects named by their sha256.
#[derive(Debug, Clone)]
pub struct DigestCache {
    folder: HintFolder,
}

impl DigestCache {
    /// The cache in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            folder: HintFolder::new(dir),
        }
    }

    /// The bytes of `digest`, if kept and intact.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = self.folder.read(oci::sha256_hex(digest)?)?;
        (oci::sha256_digest(&bytes) == digest.to_ascii_lowercase()).then_some(bytes)
    }

    /// Keeps `bytes` as `digest` if they are its content.
    pub fn put(&self, digest: &str, bytes: &[u8]) {
        let Some(hex) = oci::sha256_hex(digest) else {
            return;
        };
        if bytes.len() > MAX_BYTES
            || oci::sha256_digest(bytes) != digest.to_ascii_lowercase()
            || self.get(digest).is_some()
        {
            return;
        }
        self.folder.write(hex, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intact_content_under_a_real_digest_comes_back() {
        let folder = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(folder.path().join("digests"));
        let config = br#"{"architecture":"amd64"}"#;
        let digest = oci::sha256_digest(config);
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, b"not the content");
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, config);
        assert_eq!(cache.get(&digest).as_deref(), Some(&config[..]));
        // A file changed on disk is a miss, not other content.
        let hex = oci::sha256_hex(&digest).unwrap();
        std::fs::write(folder.path().join("digests").join(hex), b"tampered").unwrap();
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, config);
        assert_eq!(cache.get(&digest).as_deref(), Some(&config[..]));
        // Names that are not sha256 digests never become paths.
        for bad in ["sha256:../../etc/passwd", "sha512:abcd", "../x", ""] {
            cache.put(bad, config);
            assert_eq!(cache.get(bad), None);
        }
        assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 1);
    }
}
