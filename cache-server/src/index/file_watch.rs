//! Noticing writes to the index files by any process, without asking
//! SQLite: an inotify watch (through `notify`) on the index's folder counts
//! every change to the index, its WAL or its journal.
//!
//! This catches changes to the tokens table by writers that do not move
//! the token epoch (see `token_epoch`): an older `cache-server`, a change
//! made by hand. Its events arrive asynchronously (a watcher thread reads
//! them), so it is prompt but not exact; the epoch is the exact path. A
//! commit writes the WAL before it publishes the commit in the shared
//! memory index, so a look made right after the event could still see the
//! state before it: callers look once more when [`SETTLE`] has passed since
//! the last change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

/// How long after a change of the files their content is still looked at
/// on every check: longer than SQLite takes from writing the WAL to
/// publishing the commit.
pub const SETTLE: Duration = Duration::from_millis(100);

/// A running watch of the files of one index.
pub struct FileWatch {
    changes: Arc<AtomicU64>,
    /// Stops the watch when dropped.
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("changes", &self.changes())
            .finish()
    }
}

impl FileWatch {
    /// Starts watching the files of the index at `index` (`index`,
    /// `index-wal`, `index-journal`), or says why it cannot.
    pub fn start(index: &Path) -> notify::Result<Self> {
        let folder = match index.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = index
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let changes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&changes);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    // A lost or failed event may hide a change: count it.
                    Err(_) => true,
                    Ok(event) => {
                        !matches!(event.kind, EventKind::Access(_))
                            && (event.need_rescan()
                                || event.paths.is_empty()
                                || event.paths.iter().any(|path| names_index(path, &name)))
                    }
                };
                if relevant {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })?;
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        Ok(Self {
            changes,
            _watcher: watcher,
        })
    }

    /// How many changes were seen so far: a different value means the
    /// files may have changed since.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }
}

/// Whether `path` is the index file named `name` or one of SQLite's files
/// beside it.
fn names_index(path: &Path, name: &str) -> bool {
    path.file_name()
        .map(|file| file.to_string_lossy())
        .is_some_and(|file| {
            file == name
                || file
                    .strip_prefix(name)
                    .is_some_and(|rest| rest == "-wal" || rest == "-journal")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_its_sqlite_files_are_named_and_others_not() {
        assert!(names_index(Path::new("/d/index.sqlite"), "index.sqlite"));
        assert!(names_index(
            Path::new("/d/index.sqlite-wal"),
            "index.sqlite"
        ));
        assert!(names_index(
            Path::new("/d/index.sqlite-journal"),
            "index.sqlite"
        ));
        assert!(!names_index(
            Path::new("/d/index.sqlite-shm"),
            "index.sqlite"
        ));
        assert!(!names_index(Path::new("/d/other.sqlite"), "index.sqlite"));
        assert!(!names_index(Path::new("/d/cas"), "index.sqlite"));
    }

    #[test]
    fn a_write_by_another_connection_is_counted() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("index.sqlite");
        std::fs::write(&path, b"").unwrap();
        let watch = FileWatch::start(&path).unwrap();
        let before = watch.changes();
        std::fs::write(folder.path().join("unrelated"), b"x").unwrap();
        std::fs::write(folder.path().join("index.sqlite-wal"), b"x").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while watch.changes() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(watch.changes() > before, "the WAL write was not noticed");
    }
}
