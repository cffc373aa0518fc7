//! Replacing a small file whole: the bytes are written to a staging file
//! beside it and renamed over it, so a reader (or a crash) never sees half
//! of one. The local records, the digest cache, the stat cache and the
//! pushed-tree entries are written this way.

use std::io::{self, Write};
use std::path::Path;

/// Makes `path` hold exactly `bytes`, creating its folder if needed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(folder)?;
    let mut staged = tempfile::NamedTempFile::new_in(folder)?;
    staged.write_all(bytes)?;
    staged.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_staging_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/entry");
        replace_file(&path, b"first").unwrap();
        replace_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
    }
}
