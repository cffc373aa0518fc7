//! Access tokens, in the index or in the shared bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;

use super::lock;
use crate::auth::NewToken;
use crate::error::{CacheError, json_bytes};
use crate::index::{
    FILES_SETTLE, Index, NewTokenRecord, Scope, TokenRecord, TokensFingerprint, now_ms,
    secret_hash, token_hash,
};
use crate::namespaces::NamespacePolicy;
use crate::storage::Storage;

/// How long a replica trusts what it read of a token from the bucket: a
/// revocation made through another replica takes effect within this delay;
/// one made through this replica at once. (Tokens in the index are looked
/// at again whenever the index's token epoch moved, so a revocation there,
/// by this server or by `cache-server token revoke` beside it, takes effect
/// with the next request.)
pub const TOKEN_CACHE_FOR: Duration = Duration::from_secs(5);
const TOKEN_PREFIX: &str = "tokens";
/// Most secrets remembered; the cache is emptied when it is full.
const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Where tokens live.
#[derive(Debug)]
pub enum TokenBackend {
    /// In this server's index.
    Index(Index),
    /// In the shared bucket.
    Bucket(Storage),
}

/// What the backend said of a secret hash, and when.
type CachedToken = (Option<Arc<TokenRecord>>, Instant);

/// Access tokens, read through an in-memory cache so that checking a
/// request's token costs no SQLite query on the blocking pool or bucket
/// read on the hot path.
#[derive(Debug)]
pub struct TokenStore {
    backend: TokenBackend,
    /// Hash of the secret → what the backend said, and when.
    cache: Mutex<HashMap<blake3::Hash, CachedToken, foldhash::fast::RandomState>>,
    /// Moves whenever entries are dropped from the cache: a record read
    /// before a drop may be older than the drop and is not kept.
    epoch: AtomicU64,
    /// When the cache of index tokens was last checked against the index.
    freshness: Mutex<Freshness>,
}

/// What the cache of index tokens was last checked against.
#[derive(Debug)]
struct Freshness {
    /// The index's tokens fingerprint the cache was filled under.
    fingerprint: Option<TokensFingerprint>,
    /// The index's token epoch at the last check.
    epoch: Option<u64>,
    /// The index files' change count at the last check, when it moved, and
    /// whether the check made [`FILES_SETTLE`] after that move was done.
    changes: Option<u64>,
    moved_at: Instant,
    settled: bool,
}

impl Freshness {
    fn new() -> Self {
        Self {
            fingerprint: None,
            epoch: None,
            changes: None,
            moved_at: Instant::now(),
            settled: false,
        }
    }

    /// Whether the tokens table must be looked at now, given the index's
    /// token `epoch` and its files' `changes` count.
    ///
    /// The epoch is exact: every process that changes the tokens through
    /// this server's code (`cache-server token revoke` beside it included)
    /// moves it after its commit, so a request that starts after that
    /// process returned looks. The file watch catches other writers (an
    /// older `cache-server`, a hand-made SQL change), as well as an
    /// asynchronous event allows: once when the files moved, and once more
    /// when they have stood still for [`FILES_SETTLE`] (a commit is
    /// published shortly after its write). Where either cannot be had, the
    /// table is looked at on every request.
    fn needs_check(&mut self, changes: Option<u64>, epoch: Option<u64>) -> bool {
        let epoch_moved = epoch.is_none() || epoch != self.epoch;
        self.epoch = epoch;
        let files_moved = if changes.is_none() || changes != self.changes {
            self.changes = changes;
            self.moved_at = Instant::now();
            self.settled = false;
            true
        } else if !self.settled && self.moved_at.elapsed() >= FILES_SETTLE {
            self.settled = true;
            true
        } else {
            false
        };
        epoch_moved || files_moved
    }
}

/// What a new token may do.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// Who it is for (by default its id).
    pub name: Option<String>,
    /// Its scope.
    pub scope: Scope,
    /// When it stops working (Unix ms), if ever.
    pub expires_ms: Option<i64>,
    /// The namespaces it may write and read; `None`: every namespace.
    pub namespaces: Option<NamespacePolicy>,
}

/// A token object in the bucket.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TokenObject {
    id: String,
    name: String,
    scope: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespaces: Option<NamespacePolicy>,
}

impl TokenObject {
    fn record(self) -> Option<TokenRecord> {
        Some(TokenRecord {
            scope: Scope::parse(&self.scope)?,
            id: self.id,
            name: self.name,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: self.revoked_ms,
            namespaces: self.namespaces,
        })
    }

    fn of(record: &TokenRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            scope: record.scope.as_str().to_owned(),
            created_ms: record.created_ms,
            expires_ms: record.expires_ms,
            revoked_ms: record.revoked_ms,
            namespaces: record.namespaces.clone(),
        }
    }
}

fn token_path(secret_hash: &str) -> Path {
    Path::from_iter([TOKEN_PREFIX, secret_hash])
}

async fn write(storage: &Storage, hash: &str, record: &TokenRecord) -> Result<(), CacheError> {
    let body = json_bytes(&TokenObject::of(record))?;
    storage.put_small(&token_path(hash), body).await?;
    Ok(())
}

impl TokenStore {
    /// Tokens in this server's index.
    pub fn index(index: Index) -> Self {
        Self::over(TokenBackend::Index(index))
    }

    /// Tokens in the shared bucket.
    pub fn bucket(storage: Storage) -> Self {
        Self::over(TokenBackend::Bucket(storage))
    }

    fn over(backend: TokenBackend) -> Self {
        Self {
            backend,
            cache: Mutex::new(HashMap::default()),
            epoch: AtomicU64::new(0),
            freshness: Mutex::new(Freshness::new()),
        }
    }

    /// Stores `token` (only the hash of its secret).
    pub async fn create(&self, token: NewTokenRecord) -> Result<TokenRecord, CacheError> {
        let record = match &self.backend {
            TokenBackend::Index(index) => index.create_token(token.clone()).await?,
            TokenBackend::Bucket(storage) => {
                let record = token.record(now_ms());
                write(storage, &token.secret_hash, &record).await?;
                record
            }
        };
        self.forget(Some(&token.secret_hash));
        Ok(record)
    }

    /// Stores the new `token` (its secret hashed) with what `grant` allows.
    pub async fn issue(
        &self,
        token: &NewToken,
        grant: TokenGrant,
    ) -> Result<TokenRecord, CacheError> {
        self.create(NewTokenRecord {
            id: token.id.clone(),
            secret_hash: token_hash(&token.secret),
            name: grant.name.unwrap_or_else(|| token.id.clone()),
            scope: grant.scope,
            expires_ms: grant.expires_ms,
            namespaces: grant.namespaces,
        })
        .await
    }

    /// The token of `secret`, active or not: as the index holds it now, or
    /// as the bucket held it at most [`TOKEN_CACHE_FOR`] ago. A token seen
    /// before costs a hash and a map lookup.
    pub async fn by_secret(&self, secret: &str) -> Result<Option<Arc<TokenRecord>>, CacheError> {
        let hash = secret_hash(secret);
        let fresh_for = match &self.backend {
            TokenBackend::Index(index) => {
                // Read before the look, so a change during it is looked at
                // again by the next request.
                let (changes, epoch) = (index.file_changes(), index.token_epoch());
                let mut freshness = lock(&self.freshness);
                if freshness.needs_check(changes, epoch) {
                    let now = index.tokens_fingerprint()?;
                    if freshness.fingerprint != Some(now) {
                        self.forget(None);
                        freshness.fingerprint = Some(now);
                    }
                }
                Duration::MAX
            }
            TokenBackend::Bucket(_) => TOKEN_CACHE_FOR,
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let cached = lock(&self.cache).get(&hash).cloned();
        // An index-backed record stays fresh until the index changes: no
        // clock read for it.
        if let Some((record, read_at)) = cached
            && (fresh_for == Duration::MAX || read_at.elapsed() < fresh_for)
        {
            return Ok(record);
        }
        let secret_hash = hash.to_hex().to_string();
        let record = match &self.backend {
            TokenBackend::Index(index) => index.token_by_hash(secret_hash).await?,
            TokenBackend::Bucket(storage) => storage
                .read_small(&token_path(&secret_hash))
                .await?
                .and_then(|bytes| serde_json::from_slice::<TokenObject>(&bytes).ok())
                .and_then(TokenObject::record),
        }
        .map(Arc::new);
        let mut cache = lock(&self.cache);
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(hash, (record.clone(), Instant::now()));
        }
        Ok(record)
    }

    /// Drops the cached record of the secret hashing to `hash` (hex), or
    /// every cached record.
    fn forget(&self, hash: Option<&str>) {
        let mut cache = lock(&self.cache);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match hash.map(blake3::Hash::from_hex) {
            Some(Ok(hash)) => {
                cache.remove(&hash);
            }
            // Not a hash this store could have cached under: drop all.
            Some(Err(_)) | None => cache.clear(),
        }
    }

    /// Every token with its hash, oldest first (bucket only).
    async fn all_in_bucket(storage: &Storage) -> Result<Vec<(String, TokenRecord)>, CacheError> {
        let listed: Vec<_> = storage
            .list(&Path::from(TOKEN_PREFIX))
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for listed in listed {
            let Some(hash) = listed.path.filename().map(str::to_owned) else {
                continue;
            };
            let record = storage
                .read_small(&listed.path)
                .await?
                .and_then(|bytes| serde_json::from_slice::<TokenObject>(&bytes).ok())
                .and_then(TokenObject::record);
            if let Some(record) = record {
                out.push((hash, record));
            }
        }
        out.sort_by(|a, b| (a.1.created_ms, &a.1.id).cmp(&(b.1.created_ms, &b.1.id)));
        Ok(out)
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, CacheError> {
        match &self.backend {
            TokenBackend::Index(index) => Ok(index.tokens().await?),
            TokenBackend::Bucket(storage) => Ok(Self::all_in_bucket(storage)
                .await?
                .into_iter()
                .map(|(_, record)| record)
                .collect()),
        }
    }

    /// Revokes the token with this id or name; returns how many were
    /// revoked. This server stops accepting them at once.
    pub async fn revoke(&self, id_or_name: String) -> Result<usize, CacheError> {
        let revoked = match &self.backend {
            TokenBackend::Index(index) => index.revoke_token(id_or_name).await?,
            TokenBackend::Bucket(storage) => {
                let mut revoked = 0;
                for (hash, mut record) in Self::all_in_bucket(storage).await? {
                    if (record.id == id_or_name || record.name == id_or_name)
                        && record.revoked_ms.is_none()
                    {
                        record.revoked_ms = Some(now_ms());
                        write(storage, &hash, &record).await?;
                        revoked += 1;
                    }
                }
                revoked
            }
        };
        if revoked > 0 {
            self.forget(None);
        }
        Ok(revoked)
    }

    /// Whether any token is still active.
    pub async fn has_active(&self) -> Result<bool, CacheError> {
        let now = now_ms();
        Ok(self.list().await?.iter().any(|token| token.active_at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwatched_files_are_checked_every_time_and_watched_ones_after_each_move() {
        let mut unwatched = Freshness::new();
        assert!(unwatched.needs_check(None, Some(0)));
        assert!(unwatched.needs_check(None, Some(0)));

        let mut watched = Freshness::new();
        assert!(watched.needs_check(Some(0), Some(0)), "the first look");
        assert!(!watched.needs_check(Some(0), Some(0)), "nothing moved");
        assert!(watched.needs_check(Some(1), Some(0)), "the files moved");
        assert!(!watched.needs_check(Some(1), Some(0)));
        std::thread::sleep(FILES_SETTLE);
        assert!(
            watched.needs_check(Some(1), Some(0)),
            "once more after they settled"
        );
        assert!(!watched.needs_check(Some(1), Some(0)));
        assert!(watched.needs_check(Some(2), Some(0)));
    }

    #[test]
    fn a_moved_epoch_is_looked_at_at_once_and_an_unmapped_one_always() {
        let mut fresh = Freshness::new();
        assert!(fresh.needs_check(Some(0), Some(0)));
        assert!(!fresh.needs_check(Some(0), Some(0)));
        // The files have not moved (their event is not read yet): the
        // epoch alone makes the look.
        assert!(fresh.needs_check(Some(0), Some(1)), "the epoch moved");
        assert!(!fresh.needs_check(Some(0), Some(1)));
        let mut unmapped = Freshness::new();
        assert!(unmapped.needs_check(Some(0), None));
        assert!(unmapped.needs_check(Some(0), None));
    }

    use crate::index::token_hash;
    use crate::storage::StorageLocation;

    #[tokio::test]
    async fn bucket_tokens_are_seen_by_every_replica_and_revocations_reach_them() {
        let storage = Storage::open(&StorageLocation::Memory, Default::default()).unwrap();
        let a = TokenStore::bucket(storage.clone());
        let b = TokenStore::bucket(storage);
        a.create(NewTokenRecord {
            id: "id1".into(),
            secret_hash: token_hash("s"),
            name: "ci".into(),
            scope: Scope::Write,
            expires_ms: None,
            namespaces: None,
        })
        .await
        .unwrap();
        let seen = b.by_secret("s").await.unwrap().unwrap();
        assert_eq!((seen.name.as_str(), seen.scope), ("ci", Scope::Write));
        assert!(b.by_secret("other").await.unwrap().is_none());
        assert_eq!(b.revoke("ci".into()).await.unwrap(), 1);
        // Replica b revoked it; a sees it at once (it never cached it).
        let on_a = a.by_secret("s").await.unwrap().unwrap();
        assert!(on_a.revoked_ms.is_some());
        assert!(!a.has_active().await.unwrap());
    }

    #[tokio::test]
    async fn index_tokens_are_cached_and_a_local_revocation_is_immediate() {
        let folder = tempfile::tempdir().unwrap();
        let index = Index::open(&folder.path().join("i.sqlite")).unwrap();
        let tokens = TokenStore::index(index.clone());
        let grant = TokenGrant {
            name: Some("ci".into()),
            scope: Scope::Read,
            expires_ms: None,
            namespaces: None,
        };
        let token = crate::auth::new_token().unwrap();
        tokens.issue(&token, grant).await.unwrap();
        assert!(tokens.by_secret(&token.secret).await.unwrap().is_some());
        // Revoked behind the store's back (as `cache-server token revoke`
        // does beside a running server): seen at once.
        let other = Index::open(&folder.path().join("i.sqlite")).unwrap();
        other.revoke_token("ci".into()).await.unwrap();
        let seen = tokens.by_secret(&token.secret).await.unwrap().unwrap();
        assert!(seen.revoked_ms.is_some());
        // Through the store: at once.
        let again = crate::auth::new_token().unwrap();
        let grant = TokenGrant {
            name: Some("ci2".into()),
            scope: Scope::Read,
            expires_ms: None,
            namespaces: None,
        };
        tokens.issue(&again, grant).await.unwrap();
        assert!(tokens.by_secret(&again.secret).await.unwrap().is_some());
        assert_eq!(tokens.revoke("ci2".into()).await.unwrap(), 1);
        let revoked = tokens.by_secret(&again.secret).await.unwrap().unwrap();
        assert!(revoked.revoked_ms.is_some());
    }
}
