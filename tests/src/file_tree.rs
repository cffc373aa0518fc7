//! An unpacked image's files, to compare two builds of the same content
//! file for file: each path's kind, mode and bytes (a link's target).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// One path: `dir`, `file` or `link`, its mode bits (0 for a link), and
/// its bytes (a link's target).
pub type Tree = BTreeMap<String, (String, u32, Vec<u8>)>;

/// Every file, link and folder under `root`.
pub fn tree(root: &Path) -> Tree {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            let entry = if meta.is_dir() {
                pending.push(path.clone());
                ("dir".to_owned(), mode, Vec::new())
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                (
                    "link".to_owned(),
                    0,
                    target.display().to_string().into_bytes(),
                )
            } else {
                ("file".to_owned(), mode, std::fs::read(&path).unwrap())
            };
            found.insert(name, entry);
        }
    }
    found
}

/// The paths of `a` and `b` whose kind, mode or bytes differ.
pub fn differences(a: &Tree, b: &Tree) -> Vec<String> {
    let mut differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|path| a.get(*path) != b.get(*path))
        .cloned()
        .collect();
    differ.sort();
    differ.dedup();
    differ
}
