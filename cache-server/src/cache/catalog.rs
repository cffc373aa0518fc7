//! What the cache holds: the index, trusted as far as the deployment allows.
//!
//! A single server owning its store can trust its index completely
//! ([`IndexTrust::Authoritative`]): every write and delete goes through it.
//! Several replicas over one bucket cannot: another replica writes objects
//! this one has never seen and evicts objects this one still lists. There
//! the index is a cache of storage ([`IndexTrust::Cache`]): a lookup that
//! misses it asks storage before answering "absent" (and records what it
//! finds), and a row storage has not confirmed for a while is confirmed
//! again (and dropped if storage no longer has the object).

use std::time::Duration;

use cache_proto::Digest;
use futures::{StreamExt, TryStreamExt};

use crate::blob::StoredName;
use crate::error::CacheError;
use crate::index::{Index, ObjectRecord, now_ms};
use crate::reindex::describe_one;
use crate::storage::Storage;

/// Storage lookups in flight for one `missing` request.
const CHECKS_IN_FLIGHT: usize = 32;

/// How far the index is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexTrust {
    /// The index knows every object: this server is the store's only writer.
    Authoritative,
    /// The index caches storage: rows younger than `fresh_for` are trusted,
    /// anything else is checked with storage.
    Cache {
        /// How long a row storage confirmed is trusted without asking again.
        fresh_for: Duration,
    },
}

/// The index and storage, answering "what is stored". Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    storage: Storage,
    index: Index,
    trust: IndexTrust,
}

impl Catalog {
    /// A catalog over `storage` and its `index`.
    pub fn new(storage: Storage, index: Index, trust: IndexTrust) -> Self {
        Self {
            storage,
            index,
            trust,
        }
    }

    /// Whether other servers may write to and delete from the same store.
    pub fn is_shared(&self) -> bool {
        matches!(self.trust, IndexTrust::Cache { .. })
    }

    /// Rows confirmed at or after this instant (unix ms) are trusted.
    fn trusted_since(&self) -> i64 {
        match self.trust {
            IndexTrust::Authoritative => i64::MIN,
            IndexTrust::Cache { fresh_for } => now_ms() - fresh_for.as_millis() as i64,
        }
    }

    /// The row of `name`: from the index when it is trusted, else as storage
    /// says now (the index is updated either way).
    pub async fn find(&self, name: &StoredName) -> Result<Option<ObjectRecord>, CacheError> {
        let record = self.index.get(name).await?;
        if let Some(record) = &record
            && record.checked_ms >= self.trusted_since()
        {
            return Ok(Some(record.clone()));
        }
        if !self.is_shared() {
            return Ok(record);
        }
        if let Some(known) = record {
            // A row to confirm. A blob's content never changes under its
            // name, so one HEAD confirms it (hits and access time are kept);
            // an entry may have been replaced by one of the same size, so
            // it is described again below.
            match self.storage.size(&name.path()).await? {
                Some(size) if size == known.stored_size && matches!(name, StoredName::Blob(_)) => {
                    self.index.confirm(name).await?;
                    return Ok(Some(known));
                }
                Some(_) => {}
                None => {
                    tracing::debug!("dropping an index row whose object left storage");
                    self.index.remove(name).await?;
                    return Ok(None);
                }
            }
        }
        // Unknown to the index, or replaced since: describe it from storage.
        match describe_one(&self.storage, name).await? {
            Some(found) => {
                self.index.put(name, found).await?;
                Ok(self.index.get(name).await?)
            }
            None => {
                self.index.remove(name).await?;
                Ok(None)
            }
        }
    }

    /// Which of `digests` the store lacks, in order, without duplicates.
    pub async fn missing(&self, digests: Vec<Digest>) -> Result<Vec<Digest>, CacheError> {
        let doubtful = self
            .index
            .unconfirmed(digests, self.trusted_since())
            .await?;
        if !self.is_shared() || doubtful.is_empty() {
            return Ok(doubtful);
        }
        let found: Vec<(Digest, bool)> = futures::stream::iter(doubtful)
            .map(|digest| async move {
                let present = self.find(&StoredName::Blob(digest)).await?.is_some();
                Ok::<_, CacheError>((digest, present))
            })
            .buffered(CHECKS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(digest, present)| (!present).then_some(digest))
            .collect())
    }
}
