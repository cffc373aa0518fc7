//! The identity of a folder as the layer packer sees it: BLAKE3 over the
//! sorted entries (name, kind, normalised mode, content hash or link
//! target), with the same exclusions. Cheap next to packing (no tar, no
//! compression), so an unchanged app is recognised before it is packed.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::exclude::Excludes;
use crate::layer::sorted_entries;

/// Hashes the tree under `root` into `hasher`.
pub fn hash_tree(root: &Path, excludes: &Excludes, hasher: &mut blake3::Hasher) -> io::Result<()> {
    for (name, path) in sorted_entries(root, Some(excludes))? {
        let meta = std::fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        hasher.update(&name);
        hasher.update(b"\0");
        if kind.is_dir() {
            hasher.update(b"dir");
        } else if kind.is_symlink() {
            hasher.update(b"link\0");
            hasher.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            hasher.update(if executable { b"exe\0" } else { b"reg\0" });
            let mut content = blake3::Hasher::new();
            content.update_reader(std::fs::File::open(&path)?)?;
            hasher.update(content.finalize().as_bytes());
        } else {
            hasher.update(b"skipped");
        }
        hasher.update(b"\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(root: &Path) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        hash_tree(root, &Excludes::new(["*.log"]).unwrap(), &mut hasher).unwrap();
        hasher.finalize()
    }

    #[test]
    fn content_modes_and_links_count_but_mtimes_and_excluded_files_do_not() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::write(root.join("a.py"), "x").unwrap();
        let original = key(root);
        std::fs::write(root.join("debug.log"), "noise").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(root.join("a.py"), "x").unwrap();
        assert_eq!(key(root), original);
        std::fs::set_permissions(root.join("a.py"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_ne!(key(root), original);
        std::fs::set_permissions(root.join("a.py"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        assert_ne!(key(root), original);
    }
}
