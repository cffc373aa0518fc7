//! A bounded in-memory cache of small, recently read objects (content and
//! index row), so that a hot small GET is a map lookup: no SQLite query, no
//! file open, no hop to the blocking pool. Every write that replaces an
//! object, every delete and every eviction removes its entry first, so the
//! cache never serves bytes the store no longer holds.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use crate::blob::StoredName;
use crate::index::ObjectRecord;

/// Objects larger than this (uncompressed) are never cached.
pub const MAX_OBJECT: u64 = 64 * 1024;

/// The cache; see the module documentation.
#[derive(Debug)]
pub struct HotCache {
    inner: Mutex<Inner>,
    capacity: u64,
    /// Bumped by every removal: a read that started before a removal must
    /// not cache what it read (it may be the replaced content).
    generation: std::sync::atomic::AtomicU64,
}

/// A cached object: its index row and plain content, shared by every read
/// of it (a hit copies a pointer, not the row's strings).
#[derive(Debug)]
pub struct Cached {
    /// The index row.
    pub record: ObjectRecord,
    /// The plain content.
    pub content: Bytes,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<StoredName, Arc<Cached>>,
    bytes: u64,
}

impl HotCache {
    /// A cache holding at most `capacity` bytes of content.
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current generation; pass it to [`HotCache::insert`] after reading.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The row and plain content of `name`, if cached.
    pub fn get(&self, name: &StoredName) -> Option<Arc<Cached>> {
        self.inner().entries.get(name).cloned()
    }

    /// Caches `content` (the plain bytes) of `name` when it is small enough
    /// and nothing was removed since `generation` was read (before the read).
    pub fn insert(
        &self,
        name: &StoredName,
        record: &ObjectRecord,
        content: Bytes,
        generation: u64,
    ) {
        if record.size > MAX_OBJECT || content.len() as u64 != record.size || self.capacity == 0 {
            return;
        }
        let mut inner = self.inner();
        if self.generation() != generation {
            return;
        }
        let size = content.len() as u64;
        let cached = Arc::new(Cached {
            record: record.clone(),
            content,
        });
        if let Some(old) = inner.entries.put(name.clone(), cached) {
            inner.bytes -= old.content.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.entries.pop_lru() {
                Some((_, dropped)) => inner.bytes -= dropped.content.len() as u64,
                None => break,
            }
        }
    }

    /// Forgets `name` (before it is replaced, deleted or evicted).
    pub fn remove(&self, name: &StoredName) {
        let mut inner = self.inner();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(cached) = inner.entries.pop(name) {
            inner.bytes -= cached.content.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::format::Encoding;
    use cache_proto::Digest;

    fn record(size: u64) -> ObjectRecord {
        ObjectRecord {
            size,
            stored_size: size,
            encoding: Encoding::Raw,
            etag: None,
            hits: 0,
            last_access_ms: 0,
            meta: None,
            checked_ms: 0,
        }
    }

    #[test]
    fn small_objects_are_kept_within_the_capacity_and_removed_on_demand() {
        let cache = HotCache::new(10);
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| StoredName::Blob(Digest::of(x)));
        cache.insert(&a, &record(4), Bytes::from_static(b"aaaa"), 0);
        cache.insert(&b, &record(4), Bytes::from_static(b"bbbb"), 0);
        assert!(cache.get(&a).is_some());
        cache.insert(&c, &record(4), Bytes::from_static(b"cccc"), 0);
        // Over 10 bytes: the least recently used (b) went.
        assert!(cache.get(&b).is_none());
        assert_eq!(cache.get(&c).unwrap().content, Bytes::from_static(b"cccc"));
        let before = cache.generation();
        cache.remove(&c);
        assert!(cache.get(&c).is_none());
        // A read that started before the removal does not cache.
        cache.insert(&c, &record(4), Bytes::from_static(b"old!"), before);
        assert!(cache.get(&c).is_none());
        let big = StoredName::Blob(Digest::of(b"big"));
        let content = Bytes::from(vec![0; MAX_OBJECT as usize + 1]);
        cache.insert(&big, &record(MAX_OBJECT + 1), content, cache.generation());
        assert!(cache.get(&big).is_none());
    }
}
