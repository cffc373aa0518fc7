//! Leftovers of writes cut short by a crash in a local storage folder.
//!
//! The local backend stages every write in a `name#N` file (a multipart
//! upload's parts, a small object before it is linked into place). Listings
//! and reads never see them, so a crash mid-write exposes nothing; but
//! after `kill -9` nothing deletes them either. A local folder belongs to
//! one server process, so what was staged before that process started is
//! garbage and [`sweep`] removes it (in the background: a large store is
//! not walked before the server answers, and files staged since the start
//! belong to uploads in flight).

use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Whether `name` is a staged (unpublished) file of the local backend.
/// Object names never contain `#`: digests and keys are validated first.
fn is_staged(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().contains(&b'#')
}

/// Removes every staged file below `folder` last written before
/// `staged_before`; returns how many and their bytes.
pub fn sweep(folder: &Path, staged_before: SystemTime) -> io::Result<(u64, u64)> {
    let mut removed = (0u64, 0u64);
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let (count, bytes) = sweep(&entry.path(), staged_before)?;
            removed.0 += count;
            removed.1 += bytes;
        } else if kind.is_file() && is_staged(&entry.file_name()) {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta
                .modified()
                .is_ok_and(|written| written >= staged_before)
            {
                continue;
            }
            let bytes = meta.len();
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.0 += 1;
                    removed.1 += bytes;
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_go_and_objects_stay() {
        let folder = tempfile::tempdir().unwrap();
        let shard = folder.path().join("cas/ab");
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join("ab12"), b"published").unwrap();
        std::fs::write(shard.join("ab34#1"), b"half a multipart").unwrap();
        std::fs::write(folder.path().join("index.sqlite"), b"index").unwrap();
        let started = SystemTime::now() + std::time::Duration::from_secs(1);
        // A write staged after the start is an upload in flight: kept.
        let in_flight = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(sweep(folder.path(), in_flight).unwrap(), (0, 0));
        assert_eq!(sweep(folder.path(), started).unwrap(), (1, 16));
        assert!(shard.join("ab12").exists());
        assert!(!shard.join("ab34#1").exists());
        assert!(folder.path().join("index.sqlite").exists());
        assert_eq!(
            sweep(&folder.path().join("absent"), started).unwrap(),
            (0, 0)
        );
    }
}
