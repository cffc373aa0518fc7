//! Keeping the store under its quota: least-recently-used objects are
//! evicted, from the index, on any backend, in the background (and on
//! demand when a write needs room).
//!
//! An object being read or written is never evicted: readers and writers
//! hold a [`UseGuard`] while they stream; the evictor takes an object only
//! when nobody uses it, and marks it while it deletes it, so a read that
//! starts then sees a miss rather than a truncated object.
//!
//! Replicas sharing a bucket evict one at a time: a pass runs only on the
//! replica holding the `eviction` lease in the bucket. It sizes the store by
//! listing it (its own index knows only part of it) and evicts in order of
//! last use, which is the later of the object's write time and the last
//! read this replica saw. Other replicas find evicted objects gone from
//! storage and drop their rows then (see `catalog`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;

use crate::blob::{OBJECT_PREFIXES, StoredName};
use crate::error::CacheError;
use crate::index::{Index, IndexError, LeaseOutcome};
use crate::metrics::Metrics;
use crate::replicated::leases::LeaseBook;
use crate::storage::{Storage, StorageError};

/// How many least-recently-used candidates are read from the index at a time.
const BATCH: usize = 256;

/// Who uses which object: a count of readers and writers, or `EVICTING`.
#[derive(Debug, Default)]
pub struct InUse {
    users: Mutex<HashMap<StoredName, i64>>,
}

const EVICTING: i64 = -1;

/// A reader or writer of an object; the object cannot be evicted while it lives.
#[derive(Debug)]
pub struct UseGuard {
    registry: Arc<InUse>,
    name: StoredName,
}

/// The evictor's claim on an object it is deleting.
#[derive(Debug)]
struct EvictGuard {
    registry: Arc<InUse>,
    name: StoredName,
}

impl InUse {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<StoredName, i64>> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `name` as used; `None` while it is being evicted.
    pub fn try_use(self: &Arc<Self>, name: &StoredName) -> Option<UseGuard> {
        let mut users = self.users();
        let count = users.entry(name.clone()).or_insert(0);
        if *count == EVICTING {
            return None;
        }
        *count += 1;
        Some(UseGuard {
            registry: self.clone(),
            name: name.clone(),
        })
    }

    /// Marks `name` as used, waiting out an eviction in progress.
    pub async fn use_waiting(self: &Arc<Self>, name: &StoredName) -> UseGuard {
        loop {
            if let Some(guard) = self.try_use(name) {
                return guard;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn try_evict(self: &Arc<Self>, name: &StoredName) -> Option<EvictGuard> {
        let mut users = self.users();
        if users.get(name).is_some_and(|count| *count != 0) {
            return None;
        }
        users.insert(name.clone(), EVICTING);
        Some(EvictGuard {
            registry: self.clone(),
            name: name.clone(),
        })
    }
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        let mut users = self.registry.users();
        if let Some(count) = users.get_mut(&self.name) {
            *count -= 1;
            if *count <= 0 {
                users.remove(&self.name);
            }
        }
    }
}

impl Drop for EvictGuard {
    fn drop(&mut self) {
        self.registry.users().remove(&self.name);
    }
}

/// What evicting one object touches: storage, index, hot cache, counters.
#[derive(Debug, Clone)]
pub struct Remover {
    storage: Storage,
    index: Index,
    in_use: Arc<InUse>,
    metrics: Arc<Metrics>,
    hot: Option<Arc<crate::cache::hot::HotCache>>,
}

impl Remover {
    /// Removes objects from `storage` and `index`, leaving those in use.
    pub fn new(storage: Storage, index: Index, in_use: Arc<InUse>, metrics: Arc<Metrics>) -> Self {
        Self {
            storage,
            index,
            in_use,
            metrics,
            hot: None,
        }
    }

    /// Also forgets evicted objects in `hot`.
    pub fn with_hot_cache(mut self, hot: Arc<crate::cache::hot::HotCache>) -> Self {
        self.hot = Some(hot);
        self
    }

    /// The index it removes from.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The storage it removes from.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Evicts objects until `held` bytes (what the quota counts) are at
    /// most `target`, taking candidates least recently used first from
    /// `page(skip)` (`skip`: candidates in use so far, which stay) until it
    /// gives none; the bytes held afterwards.
    pub async fn evict_down<P, F>(
        &self,
        mut held: u64,
        target: u64,
        mut page: P,
    ) -> Result<u64, CacheError>
    where
        P: FnMut(usize) -> F,
        F: std::future::Future<Output = Result<Vec<(StoredName, u64)>, IndexError>>,
    {
        let mut skip = 0;
        while held > target {
            let candidates = page(skip).await?;
            if candidates.is_empty() {
                break;
            }
            for (name, size) in candidates {
                if held <= target {
                    break;
                }
                if self.evict_one(&name, size).await? {
                    held = held.saturating_sub(size);
                } else {
                    skip += 1;
                }
            }
        }
        Ok(held)
    }

    /// Deletes `name` (`size` bytes as stored) from storage, index and hot
    /// cache unless someone uses it; whether it was evicted. An object
    /// already gone (another replica evicted it) counts as evicted.
    pub async fn evict_one(&self, name: &StoredName, size: u64) -> Result<bool, CacheError> {
        let Some(_claim) = self.in_use.try_evict(name) else {
            return Ok(false);
        };
        if let Some(hot) = &self.hot {
            hot.remove(name);
        }
        match self.storage.delete(&name.path()).await {
            Ok(_) | Err(StorageError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
        self.index.remove(name).await?;
        self.metrics.evicted(size);
        tracing::debug!(bytes = size, "evicted an object");
        Ok(true)
    }
}

/// The quota keeper. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Evictor {
    remover: Remover,
    quota: u64,
    pass: Arc<tokio::sync::Mutex<()>>,
    shared: Option<SharedEviction>,
}

/// How a replica takes its turn at evicting a shared bucket.
#[derive(Debug, Clone)]
pub struct SharedEviction {
    /// Where the `eviction` lease lives (the bucket).
    pub leases: LeaseBook,
    /// This replica's name as the lease holder.
    pub replica: String,
}

/// Name of the lease of the replica that evicts.
pub const EVICTION_LEASE: &str = "eviction";

impl Evictor {
    /// An evictor keeping the store under `quota` bytes (as stored).
    pub fn new(
        storage: Storage,
        index: Index,
        in_use: Arc<InUse>,
        metrics: Arc<Metrics>,
        quota: u64,
    ) -> Self {
        Self {
            remover: Remover::new(storage, index, in_use, metrics),
            quota,
            pass: Arc::new(tokio::sync::Mutex::new(())),
            shared: None,
        }
    }

    /// Evicts a bucket other replicas share: one replica at a time, sizing
    /// the store by listing it.
    pub fn shared(mut self, shared: SharedEviction) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Also forgets evicted objects in `hot`.
    pub fn with_hot_cache(mut self, hot: Arc<crate::cache::hot::HotCache>) -> Self {
        self.remover = self.remover.with_hot_cache(hot);
        self
    }

    /// The quota in bytes.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Evicts least-recently-used objects until the store holds at most
    /// `target` bytes, skipping objects in use. Returns the bytes stored
    /// afterwards.
    pub async fn evict_to(&self, target: u64) -> Result<u64, CacheError> {
        let _pass = self.pass.lock().await;
        // Recent reads count: write them to the index first.
        self.remover.index().flush_access().await?;
        let stored = self.remover.index().totals().await?.stored_bytes;
        let index = self.remover.index();
        self.remover
            .evict_down(stored, target, |skip| {
                index.least_recently_used(skip, BATCH)
            })
            .await
    }

    /// Makes room for `incoming` more bytes; `false` when objects in use
    /// leave too little to evict. With replicas, writes are not held up:
    /// the replica holding the eviction lease brings the bucket back under
    /// quota on its next pass.
    pub async fn make_room(&self, incoming: u64) -> Result<bool, CacheError> {
        let Some(target) = self.quota.checked_sub(incoming) else {
            return Ok(false);
        };
        if self.shared.is_some() {
            return Ok(true);
        }
        if self.remover.index().totals().await?.stored_bytes <= target {
            return Ok(true);
        }
        Ok(self.evict_to(target).await? <= target)
    }

    /// Runs forever: a pass every `period`.
    pub async fn run(self, period: Duration) {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let pass = match &self.shared {
                None => self.evict_to(self.quota).await.map(Some),
                Some(shared) => self.shared_pass(shared, period).await,
            };
            if let Err(error) = pass {
                tracing::warn!(%error, "eviction pass failed");
            }
        }
    }

    /// One pass over a shared bucket, if this replica holds (or takes) the
    /// eviction lease; the bytes stored afterwards, `None` when another
    /// replica evicts.
    async fn shared_pass(
        &self,
        shared: &SharedEviction,
        period: Duration,
    ) -> Result<Option<u64>, CacheError> {
        // Held across a few missed passes, so that one slow pass does not
        // hand the turn to another replica midway.
        let ttl_ms = (period.as_millis() as i64) * 3 + 30_000;
        match shared
            .leases
            .acquire(EVICTION_LEASE, &shared.replica, ttl_ms)
            .await?
        {
            LeaseOutcome::Granted(_) => Ok(Some(self.evict_listed(self.quota).await?)),
            _ => Ok(None),
        }
    }

    /// Evicts from a shared bucket, sized by listing it, until it holds at
    /// most `target` bytes. Returns the bytes stored afterwards.
    pub async fn evict_listed(&self, target: u64) -> Result<u64, CacheError> {
        let _pass = self.pass.lock().await;
        let mut objects = Vec::new();
        for prefix in OBJECT_PREFIXES {
            let listed: Vec<_> = self
                .remover
                .storage()
                .list(&object_store::path::Path::from(prefix))
                .try_collect()
                .await?;
            objects.extend(listed.into_iter().filter_map(|listed| {
                StoredName::from_path(&listed.path)
                    .map(|name| (name, listed.size, listed.modified_ms))
            }));
        }
        let mut stored: u64 = objects.iter().map(|(_, size, _)| size).sum();
        if stored <= target {
            return Ok(stored);
        }
        self.remover.index().flush_access().await?;
        let seen = self.remover.index().access_times().await?;
        let last_use = |name: &StoredName, modified: i64| {
            seen.get(name)
                .map_or(modified, |read| (*read).max(modified))
        };
        objects.sort_by_key(|(name, _, modified)| last_use(name, *modified));
        for (name, size, _) in objects {
            if stored <= target {
                break;
            }
            if self.remover.evict_one(&name, size).await? {
                stored = stored.saturating_sub(size);
            }
        }
        tracing::debug!(stored, target, "shared eviction pass done");
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_proto::Digest;

    #[test]
    fn an_object_in_use_cannot_be_evicted_and_an_evicted_one_cannot_be_read() {
        let registry = Arc::new(InUse::default());
        let name = StoredName::Blob(Digest::of(b"x"));
        let reader = registry.try_use(&name).unwrap();
        assert!(registry.try_evict(&name).is_none());
        drop(reader);
        let claim = registry.try_evict(&name).unwrap();
        assert!(registry.try_use(&name).is_none());
        drop(claim);
        assert!(registry.try_use(&name).is_some());
        assert!(registry.users().is_empty());
    }
}
