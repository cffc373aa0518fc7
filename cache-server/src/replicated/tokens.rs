//! Access tokens, in the index or in the shared bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;

use super::lock;
use crate::auth::NewToken;
use crate::error::CacheError;
use crate::index::{Index, NewTokenRecord, Scope, TokenRecord, now_ms, token_hash};
use crate::storage::Storage;

/// How long a replica trusts what it read of a token from the bucket.
pub const TOKEN_CACHE_FOR: Duration = Duration::from_secs(5);
const TOKEN_PREFIX: &str = "tokens";

/// Where tokens live.
#[derive(Debug)]
pub enum TokenStore {
    /// In this server's index.
    Index(Index),
    /// In the shared bucket, read through a short cache.
    Bucket {
        /// The bucket.
        storage: Storage,
        /// Hash → what the bucket said, and when.
        cache: Mutex<HashMap<String, (Option<TokenRecord>, Instant)>>,
    },
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
        }
    }
}

fn token_path(secret_hash: &str) -> Path {
    Path::from_iter([TOKEN_PREFIX, secret_hash])
}

async fn write(storage: &Storage, hash: &str, record: &TokenRecord) -> Result<(), CacheError> {
    let body = serde_json::to_vec(&TokenObject::of(record)).unwrap_or_default();
    storage
        .put_small(&token_path(hash), Bytes::from(body))
        .await?;
    Ok(())
}

impl TokenStore {
    /// A store in the shared bucket.
    pub fn bucket(storage: Storage) -> Self {
        Self::Bucket {
            storage,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `token` (only the hash of its secret).
    pub async fn create(&self, token: NewTokenRecord) -> Result<TokenRecord, CacheError> {
        match self {
            Self::Index(index) => Ok(index.create_token(token).await?),
            Self::Bucket { storage, .. } => {
                let record = token.record(now_ms());
                write(storage, &token.secret_hash, &record).await?;
                Ok(record)
            }
        }
    }

    /// Stores the new `token` (its secret hashed) for `name` (by default
    /// its id).
    pub async fn issue(
        &self,
        token: &NewToken,
        name: Option<String>,
        scope: Scope,
        expires_ms: Option<i64>,
    ) -> Result<TokenRecord, CacheError> {
        self.create(NewTokenRecord {
            id: token.id.clone(),
            secret_hash: token_hash(&token.secret),
            name: name.unwrap_or_else(|| token.id.clone()),
            scope,
            expires_ms,
        })
        .await
    }

    /// The token whose secret hashes to `secret_hash`, active or not.
    pub async fn by_hash(&self, secret_hash: String) -> Result<Option<TokenRecord>, CacheError> {
        match self {
            Self::Index(index) => Ok(index.token_by_hash(secret_hash).await?),
            Self::Bucket { storage, cache } => {
                let cached = lock(cache).get(&secret_hash).cloned();
                if let Some((record, read_at)) = cached
                    && read_at.elapsed() < TOKEN_CACHE_FOR
                {
                    return Ok(record);
                }
                let record = storage
                    .read_small(&token_path(&secret_hash))
                    .await?
                    .and_then(|bytes| serde_json::from_slice::<TokenObject>(&bytes).ok())
                    .and_then(TokenObject::record);
                let mut cache = lock(cache);
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(secret_hash, (record.clone(), Instant::now()));
                Ok(record)
            }
        }
    }

    /// Every token with its hash, oldest first.
    async fn all(&self) -> Result<Vec<(String, TokenRecord)>, CacheError> {
        let Self::Bucket { storage, .. } = self else {
            return Ok(Vec::new());
        };
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
        match self {
            Self::Index(index) => Ok(index.tokens().await?),
            Self::Bucket { .. } => Ok(self.all().await?.into_iter().map(|(_, r)| r).collect()),
        }
    }

    /// Revokes the token with this id or name; returns how many were revoked.
    pub async fn revoke(&self, id_or_name: String) -> Result<usize, CacheError> {
        match self {
            Self::Index(index) => Ok(index.revoke_token(id_or_name).await?),
            Self::Bucket { storage, cache } => {
                let mut revoked = 0;
                for (hash, mut record) in self.all().await? {
                    if (record.id == id_or_name || record.name == id_or_name)
                        && record.revoked_ms.is_none()
                    {
                        record.revoked_ms = Some(now_ms());
                        write(storage, &hash, &record).await?;
                        lock(cache).remove(&hash);
                        revoked += 1;
                    }
                }
                Ok(revoked)
            }
        }
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
        })
        .await
        .unwrap();
        let seen = b.by_hash(token_hash("s")).await.unwrap().unwrap();
        assert_eq!((seen.name.as_str(), seen.scope), ("ci", Scope::Write));
        assert!(b.by_hash(token_hash("other")).await.unwrap().is_none());
        assert_eq!(b.revoke("ci".into()).await.unwrap(), 1);
        // Replica b revoked it; a sees it at once (it never cached it).
        let on_a = a.by_hash(token_hash("s")).await.unwrap().unwrap();
        assert!(on_a.revoked_ms.is_some());
        assert!(!a.has_active().await.unwrap());
    }
}
