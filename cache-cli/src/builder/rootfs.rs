//! The root filesystem of a `from` image, unpacked once per manifest
//! digest under the local cache folder (`rootfs/{hex}`) and reused by every
//! build on it. Each layer is checked against its digest before it is
//! applied; a folder appears under its final name only when complete, so
//! an interrupted unpack is never reused. The three most recently used
//! root filesystems are kept.

use std::path::{Path, PathBuf};

use super::BuildError;
use crate::image::manifest::OciDigest;
use crate::image::oci;
use crate::image::publish::BaseImage;
use crate::image::registry::Registry;
use crate::image::unpack::{self, Compression};

/// How many unpacked root filesystems the cache keeps.
const KEEP: usize = 3;

/// SHA-256 of a file, as `sha256:hex`.
fn file_digest(path: &Path) -> std::io::Result<String> {
    OciDigest::sha256_of_file(path).map(|digest| digest.to_string())
}

/// Marks `folder` as just used, for [`prune`].
fn touch(folder: &Path) {
    if let Ok(file) = std::fs::File::open(folder) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the [`KEEP`] most recently used root filesystems, and
/// unpacks that never finished.
fn prune(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut complete = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if name.starts_with(".partial-") {
            // Another process may be unpacking it right now: only an old
            // one is abandoned.
            let old = modified
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
            continue;
        }
        // Only unpacked images (named by their digest's hex) are pruned:
        // never the builds' work folder (`.work`, whose overlays may be in
        // use) nor a layer being downloaded.
        let unpacked = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if unpacked {
            complete.push((modified, entry.path()));
        }
    }
    complete.sort();
    let surplus = complete.len().saturating_sub(KEEP);
    for (_, path) in complete.into_iter().take(surplus) {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// The root filesystem of `image`, whose manifest digest is `digest`,
/// unpacked under `cache` (pulling and checking its layers the first time).
pub async fn unpacked(
    registry: &Registry,
    image: &BaseImage,
    digest: &str,
    cache: &Path,
) -> Result<PathBuf, BuildError> {
    let hex = oci::sha256_hex(digest)
        .ok_or_else(|| BuildError::Base(format!("{digest} is not a sha256 digest")))?;
    let folder = cache.join(hex);
    if folder.is_dir() {
        touch(&folder);
        return Ok(folder);
    }
    std::fs::create_dir_all(cache).map_err(BuildError::io("creating the root filesystem cache"))?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(cache)
        .map_err(BuildError::io("creating a folder to unpack into"))?;
    let root = partial.path().join("root");
    std::fs::create_dir(&root).map_err(BuildError::io("creating a folder to unpack into"))?;
    for layer in &image.layers {
        let download = tempfile::NamedTempFile::new_in(cache)
            .map_err(BuildError::io("creating a file to download a layer into"))?;
        registry
            .pull_blob_to_file(&image.reference, layer.digest.as_str(), download.path())
            .await?;
        let compression = Compression::of_media_type(&layer.media_type);
        let (root, expected) = (root.clone(), layer.digest.to_string());
        tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
            let actual = file_digest(download.path()).map_err(BuildError::io("reading a layer"))?;
            if actual != expected {
                return Err(BuildError::Base(format!(
                    "layer {expected} arrived as {actual}: refusing to unpack it"
                )));
            }
            let what = format!("unpacking layer {expected} of the base image");
            unpack::apply_file(&root, download.path(), compression).map_err(BuildError::io(&what))
        })
        .await
        .map_err(|e| BuildError::Io {
            what: "unpacking a layer".into(),
            source: std::io::Error::other(e),
        })??;
    }
    match std::fs::rename(&root, &folder) {
        Ok(()) => {}
        // Another process unpacked the same image meanwhile: use its.
        Err(_) if folder.is_dir() => {}
        Err(error) => return Err(BuildError::io("keeping the unpacked image")(error)),
    }
    drop(partial);
    prune(cache);
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recently_used_are_kept() {
        let cache = tempfile::tempdir().unwrap();
        let hex = |c: char| c.to_string().repeat(64);
        for (n, age) in [("a", 40), ("b", 30), ("c", 20), ("d", 10), (".work", 50)] {
            let name = if n.len() == 1 {
                hex(n.chars().next().unwrap())
            } else {
                n.to_owned()
            };
            let folder = cache.path().join(name);
            std::fs::create_dir(&folder).unwrap();
            let file = std::fs::File::open(&folder).unwrap();
            file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age))
                .unwrap();
        }
        std::fs::create_dir(cache.path().join(".partial-fresh")).unwrap();
        prune(cache.path());
        let mut left: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".partial-fresh".to_owned(),
                ".work".into(),
                hex('b'),
                hex('c'),
                hex('d')
            ]
        );
    }
}
