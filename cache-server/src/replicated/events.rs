//! The deploy history, in the index or merged from every replica's events
//! in the shared bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_proto::body::{DeployEvent, StoredEvent};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use super::lock;
use crate::error::{CacheError, json_bytes};
use crate::index::{Index, now_ms};
use crate::storage::Storage;

const EVENT_PREFIX: &str = "events";
/// Event objects read at once.
const READS_IN_FLIGHT: usize = 16;
/// A replica trims the bucket's events beyond retention every this many events.
const TRIM_EVERY: u64 = 50;

/// Where deploy events live.
#[derive(Debug)]
pub enum EventLog {
    /// In this server's index.
    Index(Index),
    /// One object per event in the shared bucket.
    Bucket {
        /// The bucket.
        storage: Storage,
        /// This replica's name, part of each event's object name.
        replica: String,
        /// Events already read, by object name (they never change).
        read: Mutex<HashMap<String, StoredEvent>>,
        /// Events this replica wrote.
        written: AtomicU64,
    },
}

impl EventLog {
    /// A log in the shared bucket, written by `replica`.
    pub fn bucket(storage: Storage, replica: String) -> Self {
        Self::Bucket {
            storage,
            replica,
            read: Mutex::new(HashMap::new()),
            written: AtomicU64::new(0),
        }
    }

    /// Stores `event`, keeping about `retention` events; returns its id.
    pub async fn add(&self, event: DeployEvent, retention: u64) -> Result<i64, CacheError> {
        match self {
            Self::Index(index) => Ok(index.add_event(event, retention).await?),
            Self::Bucket {
                storage,
                replica,
                written,
                ..
            } => {
                let at_ms = now_ms();
                let count = written.fetch_add(1, Ordering::Relaxed);
                // Unique across replicas in practice: the time, then a
                // per-replica sequence and a hash of the replica's name.
                let salt = blake3::hash(replica.as_bytes()).as_bytes()[0] as i64;
                let id = at_ms * 1000 + ((count as i64 * 256 + salt) % 1000);
                let stored = StoredEvent { id, at_ms, event };
                let name = format!("{at_ms:013}-{id}-{replica}");
                let body = json_bytes(&stored)?;
                storage
                    .put_small(&Path::from_iter([EVENT_PREFIX, &name]), body)
                    .await?;
                if count % TRIM_EVERY == TRIM_EVERY - 1 {
                    self.trim(retention).await?;
                }
                Ok(id)
            }
        }
    }

    /// Deletes the oldest events beyond `retention`.
    async fn trim(&self, retention: u64) -> Result<(), CacheError> {
        let Self::Bucket { storage, read, .. } = self else {
            return Ok(());
        };
        let mut names = list(storage).await?;
        let excess = names.len().saturating_sub(retention as usize);
        for name in names.drain(..excess) {
            storage
                .delete(&Path::from_iter([EVENT_PREFIX, &name]))
                .await?;
            lock(read).remove(&name);
        }
        Ok(())
    }

    /// Events received since `since_ms`, newest first, at most `limit`.
    pub async fn list(&self, since_ms: i64, limit: usize) -> Result<Vec<StoredEvent>, CacheError> {
        match self {
            Self::Index(index) => Ok(index.events(since_ms, limit).await?),
            Self::Bucket { storage, read, .. } => {
                let names = list(storage).await?;
                let newest: Vec<String> = names.into_iter().rev().take(limit).collect();
                let unread: Vec<String> = {
                    let read = lock(read);
                    newest
                        .iter()
                        .filter(|name| !read.contains_key(*name))
                        .cloned()
                        .collect()
                };
                let fetched: Vec<(String, Option<StoredEvent>)> = futures::stream::iter(unread)
                    .map(|name| async move {
                        let bytes = storage
                            .read_small(&Path::from_iter([EVENT_PREFIX, &name]))
                            .await?;
                        let event = bytes.and_then(|b| serde_json::from_slice(&b).ok());
                        Ok::<_, CacheError>((name, event))
                    })
                    .buffered(READS_IN_FLIGHT)
                    .try_collect()
                    .await?;
                let mut read = lock(read);
                for (name, event) in fetched {
                    if let Some(event) = event {
                        read.insert(name, event);
                    }
                }
                Ok(newest
                    .iter()
                    .filter_map(|name| read.get(name).cloned())
                    .filter(|event| event.at_ms >= since_ms)
                    .collect())
            }
        }
    }
}

/// Names of the bucket's event objects, oldest first.
async fn list(storage: &Storage) -> Result<Vec<String>, CacheError> {
    let listed: Vec<_> = storage
        .list(&Path::from(EVENT_PREFIX))
        .try_collect()
        .await?;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|listed| listed.path.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageLocation;

    fn event(image: &str) -> DeployEvent {
        DeployEvent {
            kind: "build".into(),
            image: image.into(),
            key: None,
            hit: true,
            phases: Default::default(),
            seconds: 1.0,
            bytes: 0,
            digest: None,
        }
    }

    #[tokio::test]
    async fn events_of_every_replica_are_merged_newest_first() {
        let storage = Storage::open(&StorageLocation::Memory, Default::default()).unwrap();
        let a = EventLog::bucket(storage.clone(), "a".into());
        let b = EventLog::bucket(storage, "b".into());
        a.add(event("one"), 100).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        b.add(event("two"), 100).await.unwrap();
        for log in [&a, &b] {
            let images: Vec<_> = log
                .list(0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event.image)
                .collect();
            assert_eq!(images, ["two", "one"]);
        }
        assert_eq!(a.list(0, 1).await.unwrap().len(), 1);
    }
}
