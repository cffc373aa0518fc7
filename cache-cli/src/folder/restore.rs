//! Writing a saved folder back.
//!
//! A manifest comes from the cache, so it is input: every path is checked
//! before anything is written (relative, no `.`/`..`/empty component, no
//! NUL, nothing beneath an entry that is a link), and every write checks
//! again that each folder on the way is a real folder inside the target,
//! never a link. Files and links are written under a temporary name in
//! their folder and renamed into place, so a reader (or a crash) never sees
//! half a file; a rename replaces a link at the destination instead of
//! following it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cache_proto::Digest;

use super::manifest::{self, EntryKind, TreeManifest};
use super::packs::PACK_MAX;

/// Longest entry path accepted, in bytes.
const MAX_PATH: usize = 4096;

/// Why a restore stopped. Nothing outside the target is ever touched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The manifest names a path that could leave the target folder.
    #[error("the manifest names an unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path, lossily.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file's content is not in the local content store.
    #[error("blob {0} is missing from the local content store")]
    Missing(Digest),
    /// The manifest is of a form this version cannot restore.
    #[error("{0}")]
    Unsupported(String),
    /// A packed file's bytes are not the content the manifest names.
    #[error("the bytes of {digest} in pack {pack} are not that content")]
    Corrupt {
        /// The content named.
        digest: Digest,
        /// The pack they came from.
        pack: Digest,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// Why.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn unsafe_path(path: &[u8], reason: &'static str) -> RestoreError {
    RestoreError::UnsafePath {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    }
}

/// Checks every path of `manifest` before anything is written, and that
/// every packed file lies inside its pack.
pub fn validate(manifest: &TreeManifest) -> Result<(), RestoreError> {
    if manifest.version > manifest::VERSION {
        return Err(RestoreError::Unsupported(format!(
            "the manifest is version {}; this cachectl reads up to {}",
            manifest.version,
            manifest::VERSION
        )));
    }
    if let Some(pack) = manifest.packs.iter().find(|pack| pack.size > PACK_MAX) {
        return Err(RestoreError::Unsupported(format!(
            "pack {} is {} bytes, over the {PACK_MAX} a restore accepts",
            pack.digest, pack.size
        )));
    }
    let mut links: HashSet<&[u8]> = HashSet::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for entry in &manifest.entries {
        let path = entry.path.0.as_slice();
        if let EntryKind::File {
            size,
            pack: Some(slot),
            ..
        } = &entry.kind
        {
            let inside = manifest.packs.get(slot.pack()).is_some_and(|pack| {
                slot.offset()
                    .checked_add(*size)
                    .is_some_and(|end| end <= pack.size)
            });
            if !inside {
                return Err(unsafe_path(path, "points outside its pack"));
            }
        }
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(unsafe_path(path, "empty or too long"));
        }
        if path.contains(&0) {
            return Err(unsafe_path(path, "contains NUL"));
        }
        if path.starts_with(b"/") {
            return Err(unsafe_path(path, "absolute"));
        }
        let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        if components
            .iter()
            .any(|c| c.is_empty() || *c == b"." || *c == b"..")
        {
            return Err(unsafe_path(path, "has an empty, `.` or `..` component"));
        }
        // Nothing may be written through a link the manifest itself makes.
        for end in 1..components.len() {
            let parent = &path[..components[..end].iter().map(|c| c.len() + 1).sum::<usize>() - 1];
            if links.contains(parent) {
                return Err(unsafe_path(path, "lies beneath a symbolic link"));
            }
        }
        if !seen.insert(path) {
            return Err(unsafe_path(path, "appears twice"));
        }
        if matches!(entry.kind, EntryKind::Symlink { .. }) {
            links.insert(path);
        }
    }
    Ok(())
}

/// Local content, by digest: the large contents (over a batch's 1 MiB)
/// that restores downloaded, kept so a later restore on this machine need
/// not fetch them again; small ones go straight into place.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// A store in `dir` (created when needed).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where `digest` is (or would be) kept.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether `digest` is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }
}

/// What a restore wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Files written.
    pub files: u64,
    /// Files already right in the target, left alone.
    pub unchanged: u64,
    /// Links written.
    pub links: u64,
    /// Folders created.
    pub dirs: u64,
}

/// What a restore must fetch, and what it can take from the target itself.
#[derive(Debug, Default)]
pub struct Plan {
    /// Digests neither the store nor the target has, with their sizes.
    pub needed: Vec<(Digest, u64)>,
    /// Digests already in the target (same content at one of its paths):
    /// copied from there to the other paths that want them.
    pub local: HashMap<Digest, PathBuf>,
}

/// The file digests `manifest` needs that neither `store` nor the target
/// (the same content already at one of its paths) has.
pub fn plan(root: &Path, manifest: &TreeManifest, store: &ContentStore) -> Plan {
    let mut local = HashMap::new();
    for entry in &manifest.entries {
        if let EntryKind::File { digest, .. } = &entry.kind
            && !local.contains_key(digest)
            && !store.contains(digest)
        {
            let path = root.join(std::ffi::OsStr::from_bytes(&entry.path.0));
            if already_there(&path, digest) {
                local.insert(*digest, path);
            }
        }
    }
    let needed = manifest
        .blobs()
        .into_iter()
        .filter(|(digest, _)| !local.contains_key(digest) && !store.contains(digest))
        .collect();
    Plan { needed, local }
}

/// The files of a manifest by content: digest → (path, executable) of each.
pub type FilesByDigest = HashMap<Digest, Vec<(Vec<u8>, bool)>>;

/// The files of `manifest` by content.
pub fn files_by_digest(manifest: &TreeManifest) -> FilesByDigest {
    let mut files = FilesByDigest::new();
    for entry in &manifest.entries {
        if let EntryKind::File {
            digest, executable, ..
        } = &entry.kind
        {
            files
                .entry(*digest)
                .or_default()
                .push((entry.path.0.clone(), *executable));
        }
    }
    files
}

/// Whether `path` is a regular file (not a link) holding `digest`.
fn already_there(path: &Path, digest: &Digest) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    std::fs::File::open(path)
        .and_then(|file| hasher.update_reader(file).map(|_| ()))
        .is_ok()
        && Digest::from(hasher.finalize()) == *digest
}

/// Makes `relative` (checked by [`validate`]) a real folder under `root`,
/// replacing a file or link in the way; every component is checked with
/// `lstat`, so a link planted in the target is never followed.
fn ensure_dir(
    root: &Path,
    relative: &[u8],
    applied: &mut Applied,
) -> Result<PathBuf, RestoreError> {
    let mut current = root.to_owned();
    for component in relative.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        current.push(std::ffi::OsStr::from_bytes(component));
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => std::fs::remove_file(&current).map_err(io_error(&current))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&current)(error)),
        }
        std::fs::create_dir(&current).map_err(io_error(&current))?;
        applied.dirs += 1;
    }
    Ok(current)
}

/// Splits `path` into its folder and its last component.
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[][..], path),
    }
}

/// Where a file's content comes from.
enum Source<'a> {
    /// A file: in the content store, or an identical one in the target.
    File(PathBuf),
    /// Bytes in memory (a batch just downloaded and verified).
    Bytes(&'a [u8]),
}

/// Writes the file `path` (checked by [`validate`]) with `source`, unless
/// it already holds `digest`: under a temporary name, then renamed.
fn write_file(
    root: &Path,
    path: &[u8],
    (digest, executable): (&Digest, bool),
    source: Source<'_>,
    applied: &mut Applied,
) -> Result<(), RestoreError> {
    let (parent, name) = split_parent(path);
    let folder = ensure_dir(root, parent, applied)?;
    let target = folder.join(std::ffi::OsStr::from_bytes(name));
    let mode = if executable { 0o755 } else { 0o644 };
    if already_there(&target, digest) {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(io_error(&target))?;
        applied.unchanged += 1;
        return Ok(());
    }
    let mut staged = tempfile::Builder::new()
        .prefix(".cachectl-restore-")
        .tempfile_in(&folder)
        .map_err(io_error(&folder))?;
    match source {
        Source::File(from) => {
            let mut content = std::fs::File::open(&from).map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    RestoreError::Missing(*digest)
                } else {
                    io_error(&from)(error)
                }
            })?;
            io::copy(&mut content, staged.as_file_mut()).map_err(io_error(&target))?;
        }
        Source::Bytes(bytes) => {
            io::Write::write_all(staged.as_file_mut(), bytes).map_err(io_error(&target))?;
        }
    }
    staged
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error(&target))?;
    let staged = staged.into_temp_path();
    replace_with(&staged, &target)?;
    // Renamed away: nothing left for the guard to delete.
    let _ = staged.keep();
    applied.files += 1;
    Ok(())
}

/// Writes `manifest` into `root` from `store` (and identical files already
/// in the target). Call [`validate`] first (done here too) and fill the
/// store with [`plan`]'s needed blobs.
pub fn apply(
    root: &Path,
    manifest: &TreeManifest,
    store: &ContentStore,
) -> Result<Applied, RestoreError> {
    let plan = plan(root, manifest, store);
    apply_except(root, manifest, store, &plan.local, &HashSet::new())
}

/// Like [`apply`], but leaves the files whose digest is in `deferred` for
/// [`write_deferred`] (their content is on its way), and takes contents the
/// store lacks from `local` (identical files already in the target).
pub fn apply_except(
    root: &Path,
    manifest: &TreeManifest,
    store: &ContentStore,
    local: &HashMap<Digest, PathBuf>,
    deferred: &HashSet<Digest>,
) -> Result<Applied, RestoreError> {
    validate(manifest)?;
    std::fs::create_dir_all(root).map_err(io_error(root))?;
    let mut applied = Applied::default();
    for entry in &manifest.entries {
        let (parent, name) = split_parent(&entry.path.0);
        match &entry.kind {
            EntryKind::Dir => {
                ensure_dir(root, &entry.path.0, &mut applied)?;
            }
            EntryKind::File {
                digest, executable, ..
            } => {
                if deferred.contains(digest) {
                    continue;
                }
                let source = match local.get(digest) {
                    Some(path) if !store.contains(digest) => path.clone(),
                    _ => store.path(digest),
                };
                write_file(
                    root,
                    &entry.path.0,
                    (digest, *executable),
                    Source::File(source),
                    &mut applied,
                )?;
            }
            EntryKind::Symlink { target: link } => {
                let folder = ensure_dir(root, parent, &mut applied)?;
                let target = folder.join(std::ffi::OsStr::from_bytes(name));
                let staged = folder.join(format!(".cachectl-link-{}", std::process::id()));
                let _ = std::fs::remove_file(&staged);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link.0), &staged)
                    .map_err(io_error(&staged))?;
                replace_with(&staged, &target).inspect_err(|_| {
                    let _ = std::fs::remove_file(&staged);
                })?;
                applied.links += 1;
            }
        }
    }
    Ok(applied)
}

/// Writes `content` (verified as `digest` by the caller) to every path in
/// `targets` (from [`files_by_digest`] of a validated manifest).
pub fn write_deferred(
    root: &Path,
    targets: &[(Vec<u8>, bool)],
    digest: &Digest,
    content: &[u8],
) -> Result<Applied, RestoreError> {
    let mut applied = Applied::default();
    for (path, executable) in targets {
        write_file(
            root,
            path,
            (digest, *executable),
            Source::Bytes(content),
            &mut applied,
        )?;
    }
    Ok(applied)
}

/// Writes the packed contents `files` (digest, offset in the pack, size)
/// from `bytes`, the part of pack `pack` that starts at offset `start`, to
/// every path in `targets` that holds them; each content is checked against
/// its digest before it is written.
pub fn write_packed(
    root: &Path,
    targets: &FilesByDigest,
    pack: &Digest,
    (start, bytes): (u64, &[u8]),
    files: &[(Digest, u64, u64)],
) -> Result<Applied, RestoreError> {
    let mut applied = Applied::default();
    for (digest, offset, size) in files {
        let content = offset
            .checked_sub(start)
            .and_then(|from| bytes.get(from as usize..(from + size) as usize))
            .filter(|content| Digest::of(content) == *digest)
            .ok_or(RestoreError::Corrupt {
                digest: *digest,
                pack: *pack,
            })?;
        let written = write_deferred(
            root,
            targets.get(digest).map_or(&[], Vec::as_slice),
            digest,
            content,
        )?;
        applied.files += written.files;
        applied.unchanged += written.unchanged;
    }
    Ok(applied)
}

/// Renames `staged` over `target`; a folder in the way is removed first
/// (the manifest says a file or link belongs there).
fn replace_with(staged: &Path, target: &Path) -> Result<(), RestoreError> {
    if std::fs::symlink_metadata(target).is_ok_and(|meta| meta.is_dir()) {
        std::fs::remove_dir_all(target).map_err(io_error(target))?;
    }
    std::fs::rename(staged, target).map_err(io_error(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::manifest::{RawPath, TreeEntry};

    impl ContentStore {
        /// Stores `content` if it hashes to `digest`; returns whether it did.
        pub fn insert(&self, digest: &Digest, content: &[u8]) -> io::Result<bool> {
            if Digest::of(content) != *digest {
                return Ok(false);
            }
            let path = self.path(digest);
            let folder = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(folder)?;
            let mut staged = tempfile::NamedTempFile::new_in(folder)?;
            io::Write::write_all(&mut staged, content)?;
            staged.persist(&path).map_err(|e| e.error)?;
            Ok(true)
        }
    }

    fn file(path: &[u8], content: &[u8]) -> TreeEntry {
        TreeEntry {
            path: RawPath(path.to_vec()),
            kind: EntryKind::File {
                digest: Digest::of(content),
                size: content.len() as u64,
                executable: false,
                pack: None,
            },
        }
    }

    fn link(path: &[u8], target: &[u8]) -> TreeEntry {
        TreeEntry {
            path: RawPath(path.to_vec()),
            kind: EntryKind::Symlink {
                target: RawPath(target.to_vec()),
            },
        }
    }

    #[test]
    fn hostile_paths_are_refused_before_anything_is_written() {
        let cases: Vec<Vec<TreeEntry>> = vec![
            vec![file(b"../escape", b"x")],
            vec![file(b"a/../../escape", b"x")],
            vec![file(b"/etc/cachectl-test", b"x")],
            vec![file(b"a//b", b"x")],
            vec![file(b"./a", b"x")],
            vec![file(b"a\0b", b"x")],
            vec![file(b"", b"x")],
            vec![link(b"evil", b"/tmp"), file(b"evil/planted", b"x")],
            vec![link(b"d/evil", b".."), file(b"d/evil/x/planted", b"x")],
            vec![file(b"twice", b"x"), file(b"twice", b"y")],
        ];
        for entries in cases {
            let folder = tempfile::tempdir().unwrap();
            let root = folder.path().join("target");
            let store = ContentStore::new(folder.path().join("store"));
            store.insert(&Digest::of(b"x"), b"x").unwrap();
            store.insert(&Digest::of(b"y"), b"y").unwrap();
            let manifest = TreeManifest::new(entries.clone());
            let error = apply(&root, &manifest, &store).unwrap_err();
            assert!(
                matches!(error, RestoreError::UnsafePath { .. }),
                "{entries:?}: {error}"
            );
            assert!(!root.exists(), "{entries:?} wrote something");
        }
    }

    #[test]
    fn a_link_planted_in_the_target_is_replaced_never_followed() {
        let folder = tempfile::tempdir().unwrap();
        let outside = folder.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = folder.path().join("target");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("lib")).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), root.join("file")).unwrap();
        let store = ContentStore::new(folder.path().join("store"));
        store.insert(&Digest::of(b"x"), b"x").unwrap();
        let manifest = TreeManifest::new(vec![file(b"lib/a.txt", b"x"), file(b"file", b"x")]);
        apply(&root, &manifest, &store).unwrap();
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "wrote outside"
        );
        assert!(
            std::fs::symlink_metadata(root.join("lib"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(std::fs::read(root.join("lib/a.txt")).unwrap(), b"x");
        assert!(
            std::fs::symlink_metadata(root.join("file"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn a_tree_comes_back_with_modes_links_and_unchanged_files_left_alone() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().join("target");
        let store = ContentStore::new(folder.path().join("store"));
        for content in [&b"one"[..], b"#!/bin/sh\n"] {
            assert!(store.insert(&Digest::of(content), content).unwrap());
        }
        assert!(!store.insert(&Digest::of(b"one"), b"not one").unwrap());
        let mut run = file(b"bin/run", b"#!/bin/sh\n");
        if let EntryKind::File { executable, .. } = &mut run.kind {
            *executable = true;
        }
        let manifest = TreeManifest::new(vec![
            TreeEntry {
                path: RawPath(b"bin".to_vec()),
                kind: EntryKind::Dir,
            },
            run,
            file(b"a/deep/one.txt", b"one"),
            link(b"bin/sh-link", b"run"),
            TreeEntry {
                path: RawPath(b"empty".to_vec()),
                kind: EntryKind::Dir,
            },
        ]);
        assert!(plan(&root, &manifest, &store).needed.is_empty());
        let applied = apply(&root, &manifest, &store).unwrap();
        assert_eq!((applied.files, applied.links), (2, 1));
        assert_eq!(std::fs::read(root.join("a/deep/one.txt")).unwrap(), b"one");
        let mode = std::fs::metadata(root.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh-link")).unwrap(),
            Path::new("run")
        );
        assert!(root.join("empty").is_dir());
        // Again: nothing to write; and a missing blob is found in the target.
        let again = apply(&root, &manifest, &store).unwrap();
        assert_eq!((again.files, again.unchanged), (0, 2));
        let empty_store = ContentStore::new(folder.path().join("other"));
        assert!(plan(&root, &manifest, &empty_store).needed.is_empty());
        // A content present at one path is copied to another that wants it.
        let mut more = manifest.entries.clone();
        more.push(file(b"copy/of-one.txt", b"one"));
        let more = TreeManifest::new(more);
        let applied = apply(&root, &more, &empty_store).unwrap();
        assert_eq!(applied.files, 1);
        assert_eq!(std::fs::read(root.join("copy/of-one.txt")).unwrap(), b"one");
        let leftovers: Vec<_> = std::fs::read_dir(root.join("bin"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cachectl"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
