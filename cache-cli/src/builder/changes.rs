//! What an install step changed in the `from` image, as a layer tree: the
//! overlay's upper folder with its whiteouts (character devices 0/0) turned
//! into OCI `.wh.NAME` files and its opaque folders into `.wh..wh..opq`,
//! without what cachectl itself put there (mount points, the host's DNS
//! files) and without folders that only lead to those. Modes and owners
//! are kept; the layer is packed with them.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Whether overlayfs marked `dir` opaque (it hides the lower folder's
/// content): `trusted.overlay.opaque` as root, `user.overlay.opaque` in a
/// user namespace.
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 4];
            rustix::fs::lgetxattr(dir, *name, &mut value).is_ok_and(|n| value[..n] == *b"y")
        })
}

/// Copies (or hard-links) `from` to `to` keeping mode and owner.
fn copy_file(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode()))?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

/// Fills `into` with the changes in `upper`, leaving out `skip` (paths in
/// the image, e.g. `/proc`); a folder left empty that `lower` has too, or
/// that only led to a skipped path, is left out as well.
pub fn collect(upper: &Path, lower: &Path, skip: &[PathBuf], into: &Path) -> io::Result<()> {
    let relative_skip: Vec<PathBuf> = skip
        .iter()
        .map(|path| path.strip_prefix("/").unwrap_or(path).to_path_buf())
        .collect();
    walk(upper, lower, Path::new(""), &relative_skip, into)?;
    Ok(())
}

/// Copies the changes under `relative`; returns whether anything of them
/// was kept.
fn walk(
    upper: &Path,
    lower: &Path,
    relative: &Path,
    skip: &[PathBuf],
    into: &Path,
) -> io::Result<bool> {
    let mut kept = false;
    let mut entries: Vec<_> = std::fs::read_dir(upper.join(relative))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = relative.join(entry.file_name());
        if skip.contains(&path) {
            continue;
        }
        let source = upper.join(&path);
        let target = into.join(&path);
        let meta = std::fs::symlink_metadata(&source)?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            let name = format!(".wh.{}", entry.file_name().to_string_lossy());
            std::fs::write(into.join(relative).join(name), b"")?;
            kept = true;
        } else if kind.is_dir() {
            std::fs::create_dir(&target)?;
            let opaque = is_opaque(&source);
            if opaque {
                std::fs::write(target.join(".wh..wh..opq"), b"")?;
            }
            let inner = walk(upper, lower, &path, skip, into)?;
            let lower_meta = std::fs::symlink_metadata(lower.join(&path)).ok();
            let same_as_lower = lower_meta.as_ref().is_some_and(|l| {
                l.is_dir()
                    && l.mode() == meta.mode()
                    && l.uid() == meta.uid()
                    && l.gid() == meta.gid()
            });
            let leads_to_skipped = skip.iter().any(|s| s.starts_with(&path));
            if !inner && !opaque && (same_as_lower || leads_to_skipped) {
                std::fs::remove_dir(&target)?;
                continue;
            }
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(meta.mode()))?;
            std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
            kept = true;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
            std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
            kept = true;
        } else if kind.is_file() {
            copy_file(&source, &target, &meta)?;
            kept = true;
        }
    }
    Ok(kept)
}

/// Moves everything in `from` into `to`, merging folders (what the step
/// wrote under `{out}` goes to the image's root in a changes layer).
pub fn merge(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let source = entry.path();
        let both_dirs = entry.file_type()?.is_dir()
            && std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
        if both_dirs {
            merge(&source, &target)?;
            continue;
        }
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&target)?,
            Ok(_) => std::fs::remove_file(&target)?,
            Err(_) => {}
        }
        if std::fs::rename(&source, &target).is_err() {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(&source)
                .arg(&target)
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!("copying {}", source.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_leave_out_mount_points_and_folders_that_only_lead_to_them() {
        let (upper, lower, into) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        for dir in ["etc", "usr/local/bin", "tmp"] {
            std::fs::create_dir_all(lower.path().join(dir)).unwrap();
        }
        // What the step did, and what cachectl put there.
        std::fs::create_dir_all(upper.path().join("usr/local/bin")).unwrap();
        std::fs::write(upper.path().join("usr/local/bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            upper.path().join("usr/local/bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::create_dir_all(upper.path().join("tmp/.tmpA/project")).unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        std::fs::create_dir_all(upper.path().join("proc")).unwrap();
        let skip = [
            PathBuf::from("/tmp/.tmpA/project"),
            PathBuf::from("/etc/resolv.conf"),
            PathBuf::from("/proc"),
        ];
        collect(upper.path(), lower.path(), &skip, into.path()).unwrap();
        let mut found: Vec<String> = Vec::new();
        let mut stack = vec![into.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let name = entry
                    .path()
                    .strip_prefix(into.path())
                    .unwrap()
                    .display()
                    .to_string();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                }
                found.push(name);
            }
        }
        found.sort();
        assert_eq!(
            found,
            ["usr", "usr/local", "usr/local/bin", "usr/local/bin/tool"]
        );
        let mode = std::fs::metadata(into.path().join("usr/local/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[test]
    fn out_merges_into_the_changes() {
        let (out, changes) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(out.path().join("opt/deps")).unwrap();
        std::fs::write(out.path().join("opt/deps/a"), "a").unwrap();
        std::fs::create_dir_all(changes.path().join("opt/venv")).unwrap();
        merge(out.path(), changes.path()).unwrap();
        assert!(changes.path().join("opt/deps/a").is_file());
        assert!(changes.path().join("opt/venv").is_dir());
    }
}
