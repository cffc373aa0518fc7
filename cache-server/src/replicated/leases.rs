//! Build leases: of N CI jobs missing the same key at once, one builds and
//! the others wait for its result.
//!
//! A single server keeps its leases in its index ([`LeaseBook::Index`]).
//! Replicas sharing a bucket keep them in the bucket, one small object per
//! lease under `leases/` ([`LeaseBook::Bucket`]), so that every replica sees
//! the same holder. How strong the bucket's guarantee is depends on the
//! store, probed at start-up ([`probe_guarantee`]):
//!
//! - **conditional**: the store honours `If-None-Match: *` and `If-Match` on
//!   PUT (AWS S3, s3s-fs). A lease is created or taken over with a
//!   conditional put, so two replicas can never both be granted it.
//! - **write and verify**: the store accepts conditional puts but ignores
//!   them (Garage 2.5 overwrites). A replica writes the lease with a nonce of
//!   its own, waits `settle`, and reads it back twice; it is granted only if
//!   both reads return its nonce. Since the stores read their own writes
//!   (Garage's quorum reads do), concurrent askers all read back the one
//!   write that landed last; a second grant needs a write that lands more
//!   than `settle` after a rival's read of "free", which takes a stalled
//!   replica. A lease only saves work: a duplicate build is harmless.

use std::time::Duration;

use bytes::Bytes;
use cache_proto::body::Lease;
use object_store::UpdateVersion;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{CacheError, json_bytes};
use crate::index::{Index, LeaseOutcome, now_ms};
use crate::storage::{Storage, StorageError};

/// Storage folder of leases.
pub const LEASE_PREFIX: &str = "leases";
/// How often an asker retries after losing a race to a rival's write.
const ATTEMPTS: usize = 4;

/// What keeps the bucket's leases exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseGuarantee {
    /// Conditional puts: never two holders.
    Conditional,
    /// Write, settle, read back twice: two holders only with a stalled replica.
    WriteAndVerify {
        /// The wait before each read-back.
        settle: Duration,
    },
}

impl std::fmt::Display for LeaseGuarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conditional => f.write_str("conditional puts"),
            Self::WriteAndVerify { settle } => {
                write!(f, "write and verify ({} ms settle)", settle.as_millis())
            }
        }
    }
}

/// Where leases live.
#[derive(Debug, Clone)]
pub enum LeaseBook {
    /// In this server's index: the server is alone.
    Index(Index),
    /// In the shared bucket.
    Bucket {
        /// The bucket.
        storage: Storage,
        /// What keeps a lease exclusive there.
        guarantee: LeaseGuarantee,
    },
}

/// The object of a lease in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LeaseObject {
    holder: String,
    expires_at_ms: i64,
    nonce: String,
}

impl LeaseObject {
    fn lease(&self) -> Lease {
        Lease {
            holder: self.holder.clone(),
            expires_at_ms: self.expires_at_ms,
        }
    }

    fn live(&self, now: i64) -> bool {
        self.expires_at_ms > now
    }
}

fn lease_path(name: &str) -> Path {
    Path::from_iter([LEASE_PREFIX, name])
}

fn nonce() -> String {
    crate::auth::random_hex(12)
}

impl LeaseBook {
    /// Whether these leases live in a bucket that honours conditional puts
    /// (so that other compare-and-set writes may rely on them too).
    pub fn conditional_puts(&self) -> bool {
        matches!(
            self,
            Self::Bucket {
                guarantee: LeaseGuarantee::Conditional,
                ..
            }
        )
    }

    /// Grants the lease `name` (a build key, or `eviction`) to `holder` for
    /// `ttl_ms` unless another holder has an unexpired one; the same holder
    /// renews.
    pub async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<LeaseOutcome, CacheError> {
        match self {
            Self::Index(index) => Ok(index
                .acquire_lease(name.to_owned(), holder.to_owned(), ttl_ms)
                .await?),
            Self::Bucket { storage, guarantee } => {
                acquire_in_bucket(storage, *guarantee, name, holder, ttl_ms).await
            }
        }
    }

    /// Releases the lease `name` if `holder` has it.
    pub async fn release(&self, name: &str, holder: &str) -> Result<LeaseOutcome, CacheError> {
        match self {
            Self::Index(index) => Ok(index
                .release_lease(name.to_owned(), holder.to_owned())
                .await?),
            Self::Bucket { storage, .. } => {
                let path = lease_path(name);
                let Some((current, _)) = read(storage, &path).await? else {
                    return Ok(LeaseOutcome::Free);
                };
                if current.holder == holder {
                    storage.delete(&path).await?;
                    Ok(LeaseOutcome::Released)
                } else if current.live(now_ms()) {
                    Ok(LeaseOutcome::Held(current.lease()))
                } else {
                    Ok(LeaseOutcome::Free)
                }
            }
        }
    }
}

/// The lease object at `path` with its version; a malformed one reads as
/// an expired lease of nobody, so that it can be taken over.
async fn read(
    storage: &Storage,
    path: &Path,
) -> Result<Option<(LeaseObject, UpdateVersion)>, StorageError> {
    let Some(read) = storage.read_versioned(path).await? else {
        return Ok(None);
    };
    let object = serde_json::from_slice(&read.bytes).unwrap_or_else(|_| LeaseObject {
        holder: String::new(),
        expires_at_ms: 0,
        nonce: String::new(),
    });
    Ok(Some((object, read.version)))
}

async fn acquire_in_bucket(
    storage: &Storage,
    guarantee: LeaseGuarantee,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<LeaseOutcome, CacheError> {
    let path = lease_path(name);
    for _ in 0..ATTEMPTS {
        let current = read(storage, &path).await?;
        let now = now_ms();
        if let Some((other, _)) = &current
            && other.holder != holder
            && other.live(now)
        {
            return Ok(LeaseOutcome::Held(other.lease()));
        }
        let mine = LeaseObject {
            holder: holder.to_owned(),
            expires_at_ms: now + ttl_ms,
            nonce: nonce(),
        };
        let bytes = json_bytes(&mine)?;
        match guarantee {
            LeaseGuarantee::Conditional => {
                let won = match current {
                    None => storage.create_small(&path, bytes).await?,
                    Some((_, version)) => storage.replace_if(&path, bytes, version).await?,
                };
                if won {
                    return Ok(LeaseOutcome::Granted(mine.lease()));
                }
            }
            LeaseGuarantee::WriteAndVerify { settle } => {
                storage.put_small(&path, bytes).await?;
                let mut kept = true;
                for _ in 0..2 {
                    tokio::time::sleep(settle).await;
                    match read(storage, &path).await? {
                        Some((now_there, _)) if now_there.nonce == mine.nonce => {}
                        Some((rival, _)) if rival.holder != holder && rival.live(now_ms()) => {
                            return Ok(LeaseOutcome::Held(rival.lease()));
                        }
                        _ => {
                            kept = false;
                            break;
                        }
                    }
                }
                if kept {
                    return Ok(LeaseOutcome::Granted(mine.lease()));
                }
            }
        }
    }
    Err(CacheError::Contended)
}

/// Finds out whether `storage` honours conditional puts, with a probe
/// object under `leases/`; a store that refuses the probe gets the weaker
/// guarantee.
pub async fn probe_guarantee(storage: &Storage, settle: Duration) -> LeaseGuarantee {
    let path = lease_path(&format!(".probe-{}", nonce()));
    let honoured = async {
        let first = storage
            .create_small(&path, Bytes::from_static(b"1"))
            .await?;
        let second = storage
            .create_small(&path, Bytes::from_static(b"2"))
            .await?;
        let stale = UpdateVersion {
            e_tag: Some("\"0000000000000000\"".into()),
            version: None,
        };
        let replaced = storage
            .replace_if(&path, Bytes::from_static(b"3"), stale)
            .await?;
        Ok::<_, StorageError>(first && !second && !replaced)
    }
    .await;
    if let Err(error) = storage.delete(&path).await {
        tracing::warn!(%error, "could not delete the lease probe object");
    }
    match honoured {
        Ok(true) => LeaseGuarantee::Conditional,
        Ok(false) => LeaseGuarantee::WriteAndVerify { settle },
        Err(error) => {
            tracing::warn!(%error, "conditional puts failed; leases fall back to write and verify");
            LeaseGuarantee::WriteAndVerify { settle }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageLocation;

    async fn exclusive(book: LeaseBook) {
        let granted = book.acquire("k", "a", 60_000).await.unwrap();
        assert!(matches!(granted, LeaseOutcome::Granted(ref l) if l.holder == "a"));
        let held = book.acquire("k", "b", 60_000).await.unwrap();
        assert!(matches!(held, LeaseOutcome::Held(ref l) if l.holder == "a"));
        assert!(matches!(
            book.acquire("k", "a", 60_000).await.unwrap(),
            LeaseOutcome::Granted(_)
        ));
        assert!(matches!(
            book.release("k", "b").await.unwrap(),
            LeaseOutcome::Held(_)
        ));
        assert_eq!(
            book.release("k", "a").await.unwrap(),
            LeaseOutcome::Released
        );
        assert_eq!(book.release("k", "a").await.unwrap(), LeaseOutcome::Free);
        // An expired lease goes to the next asker.
        book.acquire("k", "a", -1).await.unwrap();
        assert!(matches!(
            book.acquire("k", "b", 60_000).await.unwrap(),
            LeaseOutcome::Granted(ref l) if l.holder == "b"
        ));
    }

    #[tokio::test]
    async fn bucket_leases_are_exclusive_with_either_guarantee() {
        let storage = Storage::open(&StorageLocation::Memory, Default::default()).unwrap();
        let probed = probe_guarantee(&storage, Duration::from_millis(5)).await;
        assert_eq!(
            probed,
            LeaseGuarantee::Conditional,
            "the memory store honours them"
        );
        exclusive(LeaseBook::Bucket {
            storage: storage.clone(),
            guarantee: probed,
        })
        .await;
        let storage = Storage::open(&StorageLocation::Memory, Default::default()).unwrap();
        exclusive(LeaseBook::Bucket {
            storage,
            guarantee: LeaseGuarantee::WriteAndVerify {
                settle: Duration::from_millis(5),
            },
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_askers_get_one_grant_under_write_and_verify() {
        let storage = Storage::open(&StorageLocation::Memory, Default::default()).unwrap();
        let book = LeaseBook::Bucket {
            storage,
            guarantee: LeaseGuarantee::WriteAndVerify {
                settle: Duration::from_millis(50),
            },
        };
        let askers = (0..50).map(|i| {
            let book = book.clone();
            tokio::spawn(async move { book.acquire("k", &format!("job-{i}"), 60_000).await })
        });
        let mut granted = 0;
        for asker in askers {
            if matches!(asker.await.unwrap(), Ok(LeaseOutcome::Granted(_))) {
                granted += 1;
            }
        }
        assert_eq!(granted, 1);
    }
}
