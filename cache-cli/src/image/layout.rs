//! A local OCI image layout: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, readable by `skopeo`, `umoci` and friends. Every
//! file is written to a temporary name and renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::manifest::{Descriptor, Document, Index, OciDigest, PulledManifest};
use super::oci::{self, sha256_hex};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The name an `index.json` entry gives its manifest.
fn ref_name(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations
        .as_ref()?
        .get(REF_NAME)
        .map(String::as_str)
}

/// A layout folder.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

/// A layout failure.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// File system error.
    #[error("OCI layout {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `index.json` or a digest is not what the spec says.
    #[error("OCI layout {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl Layout {
    /// The layout in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
        move |source| LayoutError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The folder of the layout.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        let hex = sha256_hex(digest).ok_or_else(|| LayoutError::Invalid {
            path: self.dir.display().to_string(),
            message: format!("{digest:?} is not a sha256 digest"),
        })?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// Whether the layout holds blob `digest`.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|path| path.is_file())
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
        let folder = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(folder).map_err(Self::io(folder))?;
        let mut staged = tempfile::NamedTempFile::new_in(folder).map_err(Self::io(folder))?;
        staged.write_all(bytes).map_err(Self::io(path))?;
        staged.persist(path).map_err(|e| Self::io(path)(e.error))?;
        Ok(())
    }

    /// Reads blob `digest` (a manifest or a config) into memory.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
        if oci::sha256_digest(&bytes) != digest {
            return Err(LayoutError::Invalid {
                path: path.display().to_string(),
                message: format!("content does not match its digest {digest}"),
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, LayoutError> {
        let digest = oci::sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if !path.is_file() {
            self.write_atomically(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Stores the file at `source`, whose digest is `digest`, as a blob.
    pub fn put_blob_file(&self, digest: &str, source: &Path) -> Result<(), LayoutError> {
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        let folder = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&folder).map_err(Self::io(&folder))?;
        // Blobs are immutable: a hard link shares them between layouts on one
        // file system; elsewhere they are copied.
        if std::fs::hard_link(source, &path).is_ok() {
            return Ok(());
        }
        let staged = tempfile::NamedTempFile::new_in(&folder).map_err(Self::io(&folder))?;
        std::fs::copy(source, staged.path()).map_err(Self::io(source))?;
        staged
            .persist(&path)
            .map_err(|e| Self::io(&path)(e.error))?;
        Ok(())
    }

    /// A staging file inside the layout, to stream a blob into before
    /// [`Layout::put_blob_file`] (same file system, so the copy is cheap).
    pub fn staging_file(&self) -> Result<tempfile::NamedTempFile, LayoutError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        tempfile::NamedTempFile::new_in(&self.dir).map_err(Self::io(&self.dir))
    }

    fn read_index(&self) -> Result<Index, LayoutError> {
        let path = self.dir.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LayoutError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(Index::new(oci::OCI_INDEX, Vec::new()))
            }
            Err(source) => Err(Self::io(&path)(source)),
        }
    }

    /// The manifest digest tagged `tag`, if any.
    pub fn resolve(&self, tag: &str) -> Result<Option<String>, LayoutError> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .iter()
            .find(|entry| ref_name(entry) == Some(tag))
            .map(|entry| entry.digest.to_string()))
    }

    /// Every name in `index.json` and the manifest digest it points at.
    pub fn names(&self) -> Result<Vec<(String, String)>, LayoutError> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .iter()
            .filter_map(|entry| Some((ref_name(entry)?.to_owned(), entry.digest.to_string())))
            .collect())
    }

    /// Removes every entry of `index.json` pointing at `digest` (its blobs
    /// stay until [`Layout::collect_garbage`]).
    pub fn remove_digest(&self, digest: &str) -> Result<(), LayoutError> {
        self.update_index(|entries| {
            entries.retain(|entry| entry.digest.as_str() != digest);
            true
        })?;
        Ok(())
    }

    /// Changes the entries of `index.json` with `change` (which says
    /// whether it changed anything) under an exclusive lock of the layout
    /// folder, so that two processes tagging into one layout (the images of
    /// one project, built in parallel) never lose each other's names.
    fn update_index(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> bool,
    ) -> Result<bool, LayoutError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let folder = std::fs::File::open(&self.dir).map_err(Self::io(&self.dir))?;
        rustix::fs::flock(&folder, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Self::io(&self.dir)(e.into()))?;
        let mut index = self.read_index()?;
        if !change(&mut index.manifests) {
            return Ok(false);
        }
        // Keys sorted, as ever; typed values, so this cannot fail.
        let text = serde_json::to_value(&index)
            .and_then(|value| serde_json::to_vec_pretty(&value))
            .map_err(|e| LayoutError::Invalid {
                path: self.dir.join("index.json").display().to_string(),
                message: e.to_string(),
            })?;
        self.write_atomically(&self.dir.join("index.json"), &text)?;
        // The lock goes with `folder`.
        Ok(true)
    }

    /// Deletes every blob no entry of `index.json` reaches (through index
    /// children, configs and layers) and that is older than ten minutes (a
    /// push in progress writes blobs before naming them); returns the bytes
    /// freed. A manifest that cannot be read keeps everything (nothing is
    /// deleted on doubt).
    pub fn collect_garbage(&self) -> Result<u64, LayoutError> {
        let index = self.read_index()?;
        let mut reachable = std::collections::HashSet::new();
        let mut pending: Vec<String> = index
            .manifests
            .iter()
            .map(|entry| entry.digest.to_string())
            .collect();
        while let Some(digest) = pending.pop() {
            if !reachable.insert(digest.clone()) {
                continue;
            }
            let path = self
                .blob_path(&digest)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let bytes = self.read_blob(&digest)?;
            let manifest =
                PulledManifest::parse(bytes.into(), &digest, &path).map_err(|invalid| {
                    LayoutError::Invalid {
                        path,
                        message: invalid.to_string(),
                    }
                })?;
            match manifest.document {
                Document::Index(index) => {
                    pending.extend(index.manifests.iter().map(|child| child.digest.to_string()))
                }
                Document::Image(image) => reachable.extend(
                    std::iter::once(&image.config)
                        .chain(&image.layers)
                        .map(|blob| blob.digest.to_string()),
                ),
            }
        }
        let folder = self.dir.join("blobs").join("sha256");
        let mut freed = 0;
        for entry in std::fs::read_dir(&folder)
            .map_err(Self::io(&folder))?
            .flatten()
        {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if reachable.contains(&digest) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            // A push in progress writes its blobs before index.json names
            // them: recent blobs stay.
            let recent = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < std::time::Duration::from_secs(600));
            if recent {
                continue;
            }
            let size = meta.len();
            std::fs::remove_file(entry.path()).map_err(Self::io(&entry.path()))?;
            freed += size;
        }
        Ok(freed)
    }

    /// Removes `tag` from `index.json` (its blobs stay); whether it was there.
    pub fn remove_tag(&self, tag: &str) -> Result<bool, LayoutError> {
        self.update_index(|entries| {
            let before = entries.len();
            entries.retain(|entry| ref_name(entry) != Some(tag));
            entries.len() != before
        })
    }

    /// Stores a manifest and points each of `tags` at it in `index.json`.
    pub fn put_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tags: &[&str],
    ) -> Result<String, LayoutError> {
        let digest = self.put_blob(bytes)?;
        let stored = OciDigest::sha256_of(bytes);
        self.write_atomically(
            &self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        self.update_index(|entries| {
            entries.retain(|entry| ref_name(entry).is_none_or(|name| !tags.contains(&name)));
            for tag in tags {
                let mut entry = Descriptor::new(media_type, stored.clone(), bytes.len() as u64);
                entry.annotations =
                    Some(BTreeMap::from([(REF_NAME.to_owned(), (*tag).to_owned())]));
                entries.push(entry);
            }
            true
        })?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_tagging_into_one_layout_at_once_lose_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let layout = Layout::new(dir.path());
                std::thread::spawn(move || {
                    for n in 0..25 {
                        let manifest = format!("{{\"writer\":{writer},\"n\":{n}}}");
                        layout
                            .put_manifest(
                                manifest.as_bytes(),
                                oci::OCI_MANIFEST,
                                &[&format!("w{writer}-{n}")],
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(Layout::new(dir.path()).names().unwrap().len(), 100);
    }

    #[test]
    fn tags_move_and_blobs_are_content_addressed() {
        let folder = tempfile::tempdir().unwrap();
        let layout = Layout::new(folder.path().join("oci"));
        assert_eq!(layout.resolve("base-1").unwrap(), None);
        let first = layout
            .put_manifest(b"{\"a\":1}", oci::OCI_MANIFEST, &["base-1", "latest"])
            .unwrap();
        assert!(layout.has_blob(&first));
        let second = layout
            .put_manifest(b"{\"a\":2}", oci::OCI_MANIFEST, &["base-2", "latest"])
            .unwrap();
        assert_eq!(layout.resolve("base-1").unwrap(), Some(first));
        assert_eq!(layout.resolve("latest").unwrap(), Some(second.clone()));
        assert_eq!(layout.resolve("base-2").unwrap(), Some(second));
        assert!(folder.path().join("oci/oci-layout").is_file());
    }
}
