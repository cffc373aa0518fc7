//! The identity of a folder as the layer packer sees it: BLAKE3 over the
//! sorted entries (name, kind, normalised mode, content hash or link
//! target), with the same exclusions. Cheap next to packing (no tar, no
//! compression), so an unchanged app is recognised before it is packed.
//!
//! With a [`StatCache`], a file whose size, mtime, ctime, inode and device
//! are those recorded at the last run is not read again: its content hash
//! is taken from the cache, so an unchanged app costs one `stat` per file.
//! Entries changed within the last two seconds are not cached (a file
//! rewritten within the timestamp granularity of its last hash would look
//! unchanged: git's "racily clean" case).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pack::exclude::Excludes;
use crate::pack::layer::{Entry, sorted_entries};
use crate::replace_file::replace_file;

/// Format tag of the cache file.
const MAGIC: &[u8; 16] = b"cachectl-tree/1\n";
/// Entries changed more recently than this are hashed every time.
const RACY_NANOS: i128 = 2_000_000_000;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// File name bytes → the stamp and the content hash computed at it.
type Entries = HashMap<Vec<u8>, (Stamp, [u8; 32])>;

/// Content hashes of the files of one folder, by name, with the stamp they
/// were computed at; loaded from and saved to one file.
#[derive(Debug, Default)]
pub struct StatCache {
    file: PathBuf,
    entries: Entries,
    fresh: Entries,
}

impl StatCache {
    /// The cache of folder `root`, kept in `dir` (a missing or unreadable
    /// cache is an empty one).
    pub fn load(dir: &Path, root: &Path) -> Self {
        let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let name = blake3::hash(absolute.as_os_str().as_encoded_bytes()).to_hex();
        let file = dir.join(format!("{}.bin", &name[..32]));
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|bytes| decode(&bytes))
            .unwrap_or_default();
        Self {
            file,
            entries,
            fresh: HashMap::new(),
        }
    }

    /// The content hash of the file `name` with metadata `meta` at `path`,
    /// from the cache when its stamp matches, else read and hashed.
    pub fn content_hash(
        &mut self,
        name: &[u8],
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> io::Result<[u8; 32]> {
        let stamp = Stamp::of(meta);
        let hash = match self.entries.get(name) {
            Some((cached, hash)) if *cached == stamp => *hash,
            _ => {
                let mut content = blake3::Hasher::new();
                content.update_reader(std::fs::File::open(path)?)?;
                *content.finalize().as_bytes()
            }
        };
        self.fresh.insert(name.to_owned(), (stamp, hash));
        Ok(hash)
    }

    /// Writes the entries seen in this run (not the racy ones) atomically.
    pub fn save(self) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let settled = self
            .fresh
            .iter()
            .filter(|(_, (stamp, _))| now - stamp.mtime_ns.max(stamp.ctime_ns) > RACY_NANOS);
        let mut bytes = MAGIC.to_vec();
        for (name, (stamp, hash)) in settled {
            bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&stamp.size.to_le_bytes());
            bytes.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
            bytes.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
            bytes.extend_from_slice(&stamp.inode.to_le_bytes());
            bytes.extend_from_slice(&stamp.device.to_le_bytes());
            bytes.extend_from_slice(hash);
        }
        replace_file(&self.file, &bytes)
    }
}

/// Reads a cache file; `None` when it is not one.
fn decode(bytes: &[u8]) -> Option<Entries> {
    let mut input = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut entries = HashMap::new();
    let take = |n: usize, input: &mut &[u8]| -> Option<Vec<u8>> {
        let mut out = vec![0; n];
        input.read_exact(&mut out).ok()?;
        Some(out)
    };
    let u64_of = |b: Vec<u8>| Some(u64::from_le_bytes(b.try_into().ok()?));
    let i128_of = |b: Vec<u8>| Some(i128::from_le_bytes(b.try_into().ok()?));
    while !input.is_empty() {
        let length = u32::from_le_bytes(take(4, &mut input)?.try_into().ok()?) as usize;
        if length > input.len() {
            return None;
        }
        let name = take(length, &mut input)?;
        let stamp = Stamp {
            size: u64_of(take(8, &mut input)?)?,
            mtime_ns: i128_of(take(16, &mut input)?)?,
            ctime_ns: i128_of(take(16, &mut input)?)?,
            inode: u64_of(take(8, &mut input)?)?,
            device: u64_of(take(8, &mut input)?)?,
        };
        let hash: [u8; 32] = take(32, &mut input)?.try_into().ok()?;
        entries.insert(name, (stamp, hash));
    }
    Some(entries)
}

/// Hashes the tree under `root` into `hasher`, reading only the files
/// `cache` (if any) does not vouch for.
pub fn hash_tree(
    root: &Path,
    excludes: &Excludes,
    hasher: &mut blake3::Hasher,
    mut cache: Option<&mut StatCache>,
) -> io::Result<()> {
    for Entry { name, path, meta } in sorted_entries(root, Some(excludes))? {
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
            let content = match cache.as_deref_mut() {
                Some(cache) => cache.content_hash(&name, &path, &meta)?,
                None => {
                    let mut content = blake3::Hasher::new();
                    content.update_reader(std::fs::File::open(&path)?)?;
                    *content.finalize().as_bytes()
                }
            };
            hasher.update(&content);
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

    fn key(root: &Path, cache: Option<&mut StatCache>) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        hash_tree(root, &Excludes::new(["*.log"]).unwrap(), &mut hasher, cache).unwrap();
        hasher.finalize()
    }

    #[test]
    fn content_modes_and_links_count_but_mtimes_and_excluded_files_do_not() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::write(root.join("a.py"), "x").unwrap();
        let original = key(root, None);
        std::fs::write(root.join("debug.log"), "noise").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(root.join("a.py"), "x").unwrap();
        assert_eq!(key(root, None), original);
        std::fs::set_permissions(root.join("a.py"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_ne!(key(root, None), original);
        std::fs::set_permissions(root.join("a.py"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        assert_ne!(key(root, None), original);
    }

    /// Sets a file's mtime well in the past, so the cache trusts its stamp.
    fn settle(path: &Path) {
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn the_cache_gives_the_same_key_and_sees_every_change() {
        let folder = tempfile::tempdir().unwrap();
        let caches = tempfile::tempdir().unwrap();
        let root = folder.path().join("app");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.py"), "one").unwrap();
        settle(&root.join("a.py"));
        let uncached = key(&root, None);

        let mut cache = StatCache::load(caches.path(), &root);
        assert_eq!(key(&root, Some(&mut cache)), uncached);
        cache.save().unwrap();
        let mut cache = StatCache::load(caches.path(), &root);
        // ctime is "now" (set_modified changed it), so nothing is trusted yet;
        // the key is right either way.
        assert_eq!(key(&root, Some(&mut cache)), uncached);
        cache.save().unwrap();

        // Same size, rewritten: a new key, cache or not.
        std::fs::write(root.join("a.py"), "two").unwrap();
        settle(&root.join("a.py"));
        let mut cache = StatCache::load(caches.path(), &root);
        let changed = key(&root, Some(&mut cache));
        assert_ne!(changed, uncached);
        assert_eq!(changed, key(&root, None));
    }

    #[test]
    fn a_trusted_stamp_skips_the_read_and_a_corrupt_cache_is_empty() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::write(root.join("a.py"), "one").unwrap();
        let meta = std::fs::metadata(root.join("a.py")).unwrap();
        let mut cache = StatCache::default();
        // A recorded hash for exactly this stamp is used without reading.
        cache
            .entries
            .insert(b"a.py".to_vec(), (Stamp::of(&meta), [7; 32]));
        let hash = cache
            .content_hash(b"a.py", &root.join("a.py"), &meta)
            .unwrap();
        assert_eq!(hash, [7; 32]);
        assert!(decode(b"not a cache").is_none());
        assert!(decode(&[MAGIC.as_slice(), &[200, 0, 0, 0, 1]].concat()).is_none());
    }
}
