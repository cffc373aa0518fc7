//! A counter, shared through memory by every process that opens one index,
//! that moves after each committed change to its tokens table.
//!
//! This is what makes a revocation by `cache-server token revoke`, run
//! beside a running server, take effect with the server's very next
//! request. The revoking process bumps the counter once its commit is
//! published; the server reads the counter (one atomic load: no system
//! call, no lock) before it trusts its cache of tokens, and looks at the
//! tokens table when the counter moved. Nothing here is asynchronous:
//! unlike an inotify event, which a watcher thread may not have read yet
//! on a busy machine, the bump is in the server's memory the moment the
//! revoking process returns.
//!
//! The counter is the first 8 bytes of a file beside the index
//! (`{index}-token-epoch`), mapped shared into each process.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// Bytes of the counter file.
const LEN: u64 = std::mem::size_of::<u64>() as u64;

/// The mapped counter of one index.
pub struct TokenEpoch {
    map: MmapMut,
}

impl std::fmt::Debug for TokenEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEpoch")
            .field("value", &self.value())
            .finish()
    }
}

/// The counter file of the index at `index`.
pub fn path_for(index: &Path) -> PathBuf {
    let mut name = index.as_os_str().to_owned();
    name.push("-token-epoch");
    PathBuf::from(name)
}

impl TokenEpoch {
    /// Maps the counter of the index at `index`, creating its file.
    pub fn open(index: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path_for(index))?;
        // Only ever grown: a process that finds the file shorter extends
        // it with zeros, never shortens what another wrote.
        if file.metadata()?.len() < LEN {
            file.set_len(LEN)?;
        }
        // SAFETY: the mapping is of a file only this module writes, through
        // atomics. Another process can change its bytes at any time, which
        // is the point and why every access is atomic; one that shortened
        // the file would make an access fault, and only a process with
        // write access to the index folder (which could rewrite the index
        // itself) can.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(LEN as usize)
                .map_mut(&file)?
        };
        Ok(Self { map })
    }

    fn counter(&self) -> &AtomicU64 {
        let pointer = self.map.as_ptr().cast_mut().cast::<u64>();
        // SAFETY: the mapping starts on a page boundary (so the pointer is
        // aligned for a u64), is LEN bytes long and lives as long as
        // `self`; every process accesses these bytes only through this
        // atomic.
        unsafe { AtomicU64::from_ptr(pointer) }
    }

    /// The counter now.
    pub fn value(&self) -> u64 {
        self.counter().load(Ordering::SeqCst)
    }

    /// Moves the counter: call after a change to the tokens table has been
    /// committed.
    pub fn bump(&self) {
        self.counter().fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_through_one_mapping_is_seen_through_another_at_once() {
        let folder = tempfile::tempdir().unwrap();
        let index = folder.path().join("index.sqlite");
        let server = TokenEpoch::open(&index).unwrap();
        let revoker = TokenEpoch::open(&index).unwrap();
        let before = server.value();
        revoker.bump();
        assert_eq!(server.value(), before + 1);
        // A third opener keeps the value.
        assert_eq!(TokenEpoch::open(&index).unwrap().value(), before + 1);
        assert_eq!(std::fs::metadata(path_for(&index)).unwrap().len(), LEN);
    }
}
