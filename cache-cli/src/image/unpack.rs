//! An image's layers applied in order to a folder, as a container runtime
//! does: OCI whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties its
//! directory of what lower layers put there), an entry replacing whatever
//! its path held, links kept as links, and no entry written outside the
//! folder (the `tar` crate's `unpack_in` refuses `..`, absolute paths and
//! paths through symlinks that leave it). Ownership is kept when running as
//! root; device nodes are skipped. Layers are read as Go's `archive/tar`
//! reads them (multi-member gzip, several zstd frames, no end-of-archive
//! marker; see [`super::layer_stream`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::layer_stream::{CurrentEntry, EntryBoundedReader, EntrySpan};

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, and Docker's `.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// The compression a layer media type names.
    pub fn of_media_type(media_type: &str) -> Self {
        if media_type.ends_with("zstd") {
            Self::Zstd
        } else if media_type.ends_with("gzip") {
            Self::Gzip
        } else {
            Self::None
        }
    }
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The entry's path inside the folder, or `None` for `.`/empty names.
/// `..` and absolute parts are refused by `unpack_in` later; here they
/// only must not steer a whiteout outside the folder.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

/// Removes whatever `path` is (a file, a link or a whole tree), if anything.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether `path` resolves, through no symlink, to a place inside `root`:
/// a whiteout must never delete through a link planted by a lower layer.
fn inside_without_links(root: &Path, relative: &Path) -> bool {
    let mut current = root.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            _ => {}
        }
    }
    true
}

/// Applies one layer (`reader`, compressed as `compression`) to `root`.
pub fn apply(root: &Path, reader: impl Read, compression: Compression) -> io::Result<()> {
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        // pigz, pgzip and concatenated `gzip` runs write several members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    };
    let as_root = rustix::process::geteuid().is_root();
    let current = CurrentEntry::default();
    let mut archive = tar::Archive::new(EntryBoundedReader::new(reader, current.clone()));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(as_root);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // What this layer wrote: an opaque marker empties its directory of what
    // lower layers put there, not of this layer's own entries.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let entry_path = entry.path()?.into_owned();
        current.set((!kind.is_gnu_sparse()).then(|| EntrySpan {
            path: entry_path.clone(),
            data_start: entry.raw_file_position(),
            data_len: entry.size(),
        }));
        let Some(path) = relative(&entry_path) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE {
            let folder = root.join(&parent);
            if inside_without_links(root, &path) && folder.is_dir() {
                for child in std::fs::read_dir(&folder)? {
                    let child = child?;
                    if !written.contains(&parent.join(child.file_name())) {
                        remove(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let target = parent.join(hidden);
            if inside_without_links(root, &target) {
                remove(&root.join(&target))?;
            }
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        // An entry replaces what its path held, except a directory over a
        // directory, which merges.
        let existing = root.join(&path);
        if inside_without_links(root, &path)
            && let Ok(meta) = std::fs::symlink_metadata(&existing)
            && !(meta.is_dir() && kind.is_dir())
        {
            remove(&existing)?;
        }
        entry.unpack_in(root)?;
        written.insert(path);
    }
    Ok(())
}

/// Applies the layer file `layer` to `root`.
pub fn apply_file(root: &Path, layer: &Path, compression: Compression) -> io::Result<()> {
    apply(root, BufReader::new(File::open(layer)?), compression)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(text) if path.contains("..") => {
                    // What a hostile layer holds; `append_data` refuses it.
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                    header.set_cksum();
                    builder.append(&header, text.as_bytes()).unwrap();
                }
                Some(text) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder
                        .append_data(&mut header, path, text.as_bytes())
                        .unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_cksum();
                    builder.append_data(&mut header, path, io::empty()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_delete_and_opaque_directories_hide_lower_layers() {
        let root = tempfile::tempdir().unwrap();
        let lower = layer(&[
            ("etc", None),
            ("etc/keep", Some("keep")),
            ("etc/gone", Some("gone")),
            ("opt", None),
            ("opt/old", Some("old")),
            ("usr/bin/tool", Some("v1")),
        ]);
        apply(root.path(), lower.as_slice(), Compression::None).unwrap();
        let upper = layer(&[
            ("etc/.wh.gone", Some("")),
            ("opt/new", Some("new")),
            ("opt/.wh..wh..opq", Some("")),
            ("usr/bin/tool", Some("v2")),
            ("../escape", Some("no")),
        ]);
        apply(root.path(), upper.as_slice(), Compression::None).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).ok();
        assert_eq!(read("etc/keep").as_deref(), Some("keep"));
        assert_eq!(read("etc/gone"), None);
        assert_eq!(
            read("opt/old"),
            None,
            "the opaque directory kept a lower file"
        );
        assert_eq!(
            read("opt/new").as_deref(),
            Some("new"),
            "the opaque marker ate its own layer"
        );
        assert_eq!(read("usr/bin/tool").as_deref(), Some("v2"));
        assert!(!root.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn a_whiteout_through_a_symlink_deletes_nothing_outside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let upper = layer(&[("link/.wh.precious", Some(""))]);
        apply(root.path(), upper.as_slice(), Compression::None).unwrap();
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn gzip_layers_are_read_by_their_media_type() {
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Gzip
        );
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Gzip
        );
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Zstd
        );
        let root = tempfile::tempdir().unwrap();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut encoder, &layer(&[("a", Some("b"))])).unwrap();
        let compressed = encoder.finish().unwrap();
        apply(root.path(), compressed.as_slice(), Compression::Gzip).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("a")).unwrap(), "b");
    }
}
