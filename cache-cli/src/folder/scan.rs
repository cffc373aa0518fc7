//! Walking a folder into a [`TreeManifest`]: entries sorted by path bytes,
//! the same exclusions as the app layer, symlinks kept as links, files
//! hashed with BLAKE3 on every core.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cache_proto::Digest;

use super::manifest::{EntryKind, RawPath, TreeEntry, TreeManifest};
use crate::pack::exclude::Excludes;
use crate::pack::layer::sorted_entries;

/// A scanned folder: its manifest, and where each file's bytes are (by
/// digest, one path per distinct content).
#[derive(Debug)]
pub struct Scanned {
    /// The manifest.
    pub manifest: TreeManifest,
    /// One local file per distinct digest, to upload from.
    pub sources: Vec<(Digest, u64, PathBuf)>,
}

/// Scans `root`, leaving out what `excludes` names. Sockets, devices and
/// pipes are skipped.
pub fn scan(root: &Path, excludes: &Excludes) -> io::Result<Scanned> {
    let entries = sorted_entries(root, Some(excludes))?;
    let files: Vec<(usize, PathBuf, u64)> = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.meta.is_file())
        .map(|(index, entry)| (index, entry.path.clone(), entry.meta.len()))
        .collect();
    let digests = hash_all(&files)?;
    let mut digest_of = std::collections::HashMap::new();
    for ((index, _, _), digest) in files.iter().zip(&digests) {
        digest_of.insert(*index, *digest);
    }
    let mut manifest_entries = Vec::with_capacity(entries.len());
    let mut sources = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let kind = entry.meta.file_type();
        let kind = if kind.is_dir() {
            EntryKind::Dir
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&entry.path)?;
            EntryKind::Symlink {
                target: RawPath(target.into_os_string().into_encoded_bytes()),
            }
        } else if let Some(digest) = digest_of.get(&index) {
            let size = entry.meta.len();
            if seen.insert(*digest) {
                sources.push((*digest, size, entry.path.clone()));
            }
            EntryKind::File {
                digest: *digest,
                size,
                executable: entry.meta.permissions().mode() & 0o111 != 0,
                pack: None,
            }
        } else {
            tracing::warn!(path = %entry.path.display(), "not a file, folder or link: skipped");
            continue;
        };
        manifest_entries.push(TreeEntry {
            path: RawPath(entry.name.clone()),
            kind,
        });
    }
    Ok(Scanned {
        manifest: TreeManifest::new(manifest_entries),
        sources,
    })
}

/// BLAKE3 of each file, in order, spread over the available cores.
fn hash_all(files: &[(usize, PathBuf, u64)]) -> io::Result<Vec<Digest>> {
    let workers = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(2)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hashed: Vec<Vec<(usize, io::Result<Digest>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((_, path, _)) = files.get(index) else {
                            break done;
                        };
                        done.push((index, hash_file(path)));
                    }
                })
            })
            .collect();
        // A worker that panicked hashed nothing we can use: its files stay
        // missing and fail below.
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    let mut digests: Vec<Option<Digest>> = vec![None; files.len()];
    for (index, result) in hashed.into_iter().flatten() {
        digests[index] = Some(result?);
    }
    digests
        .into_iter()
        .map(|digest| digest.ok_or_else(|| io::Error::other("a file was not hashed")))
        .collect()
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    // Memory-mapped for large files is faster, but a file truncated under
    // us would fault; a plain read is safe.
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(Digest::from(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_links_folders_and_modes_are_described_and_exclusions_respected() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::create_dir_all(root.join("pkg/bin")).unwrap();
        std::fs::write(root.join("pkg/a.txt"), b"same").unwrap();
        std::fs::write(root.join("pkg/b.txt"), b"same").unwrap();
        std::fs::write(root.join("pkg/bin/run"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("pkg/bin/run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(root.join("debug.log"), b"noise").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("pkg/link")).unwrap();
        let scanned = scan(root, &Excludes::new(["*.log"]).unwrap()).unwrap();
        let paths: Vec<_> = scanned
            .manifest
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path.0).into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "pkg",
                "pkg/a.txt",
                "pkg/b.txt",
                "pkg/bin",
                "pkg/bin/run",
                "pkg/link"
            ]
        );
        // Two files with the same content are one blob to upload.
        assert_eq!(scanned.sources.len(), 2);
        assert_eq!(scanned.manifest.blobs().len(), 2);
        let run = &scanned.manifest.entries[4];
        assert!(matches!(
            run.kind,
            EntryKind::File {
                executable: true,
                ..
            }
        ));
        assert_eq!(
            scanned.manifest.entries[5].kind,
            EntryKind::Symlink {
                target: RawPath(b"a.txt".to_vec())
            }
        );
        assert!(matches!(
            scanned.manifest.entries[1].kind,
            EntryKind::File { digest, size: 4, executable: false, pack: None } if digest == Digest::of(b"same")
        ));
    }
}
