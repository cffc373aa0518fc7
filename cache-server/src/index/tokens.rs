//! Access tokens: a random secret shown once at creation; the index keeps
//! only its BLAKE3 hash (the secret has 256 bits of entropy, so a fast hash
//! is enough), its scope, name, expiry and revocation.

use rusqlite::{OptionalExtension, params};

use super::file_watch::FileWatch;
use super::token_epoch::TokenEpoch;
use super::{Index, IndexError, TokensFingerprint, now_ms};
use crate::namespaces::NamespacePolicy;

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read blobs and entries.
    Read,
    /// Read and write.
    Write,
    /// Everything, including stats and token management.
    Admin,
}

impl Scope {
    /// `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// The inverse of [`Scope::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A token as the index knows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    /// Public identifier, used to revoke.
    pub id: String,
    /// Who it is for.
    pub name: String,
    /// What it may do.
    #[serde(serialize_with = "scope_name")]
    pub scope: Scope,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds, if it expires.
    pub expires_ms: Option<i64>,
    /// Unix milliseconds of its revocation, if revoked.
    pub revoked_ms: Option<i64>,
    /// The namespaces it may write and read; `None`: every namespace.
    pub namespaces: Option<NamespacePolicy>,
}

fn scope_name<S: serde::Serializer>(scope: &Scope, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(scope.as_str())
}

impl TokenRecord {
    /// What it may do in namespaces: its policy, or every namespace.
    pub fn policy(&self) -> &NamespacePolicy {
        self.namespaces
            .as_ref()
            .unwrap_or_else(|| NamespacePolicy::unrestricted_ref())
    }

    /// Whether it is neither revoked nor expired at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|expires| expires > now_ms)
    }
}

/// The stored form of a secret: [`secret_hash`] in hex.
pub fn token_hash(secret: &str) -> String {
    secret_hash(secret).to_hex().to_string()
}

/// The BLAKE3 hash of a secret, the key tokens are looked up by.
pub fn secret_hash(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

/// A row, with its scope and policy as stored (checked by the caller).
fn row_to_record(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(TokenRecord, String, Option<String>)> {
    let scope: String = row.get(2)?;
    let policy: Option<String> = row.get(6)?;
    Ok((
        TokenRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            scope: Scope::parse(&scope).unwrap_or(Scope::Read),
            created_ms: row.get(3)?,
            expires_ms: row.get(4)?,
            revoked_ms: row.get(5)?,
            namespaces: policy
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
        },
        scope,
        policy,
    ))
}

/// A row whose scope or policy this binary cannot read is corrupt: a
/// token must never gain rights by being misread.
fn checked(
    (record, scope, policy): (TokenRecord, String, Option<String>),
) -> Result<TokenRecord, IndexError> {
    if Scope::parse(&scope).is_none() {
        return Err(IndexError::Corrupt(format!("token scope {scope:?}")));
    }
    if policy.is_some() && record.namespaces.is_none() {
        return Err(IndexError::Corrupt(format!(
            "namespace policy of token {}",
            record.id
        )));
    }
    Ok(record)
}

const COLUMNS: &str = "id, name, scope, created, expires, revoked, namespaces";

/// A token to store: never its secret, only the secret's hash.
#[derive(Debug, Clone)]
pub struct NewTokenRecord {
    /// Public identifier.
    pub id: String,
    /// [`token_hash`] of the secret.
    pub secret_hash: String,
    /// Who it is for.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it stops working (Unix ms), if ever.
    pub expires_ms: Option<i64>,
    /// The namespaces it may write and read; `None`: every namespace.
    pub namespaces: Option<NamespacePolicy>,
}

impl NewTokenRecord {
    /// The record stored for it, created `created_ms`.
    pub fn record(&self, created_ms: i64) -> TokenRecord {
        TokenRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: None,
            namespaces: self.namespaces.clone(),
        }
    }
}

impl Index {
    /// How many changes to the index files (by any process) were seen so
    /// far, or `None` when they are not watched: while the count stands
    /// still (and [`super::FILES_SETTLE`] has passed since it moved), no
    /// commit can have changed the tokens.
    pub fn file_changes(&self) -> Option<u64> {
        self.inner.files.as_ref().map(FileWatch::changes)
    }

    /// A counter that every process moves (through this type) after it
    /// committed a change to the tokens table, read without a system call:
    /// while it stands still, no token was created or revoked through
    /// cachectl's code. `None` where it cannot be mapped.
    pub fn token_epoch(&self) -> Option<u64> {
        self.inner.token_epoch.as_ref().map(TokenEpoch::value)
    }

    /// Says to every process on this index that the tokens changed.
    fn tokens_changed(&self) {
        if let Some(epoch) = &self.inner.token_epoch {
            epoch.bump();
        }
    }

    /// A value that changes whenever a token is created or revoked, by this
    /// server or by `cache-server token` beside it. Cheap enough to call on
    /// every request, on the calling thread: one `PRAGMA data_version` (no
    /// I/O), and a one-row query over the small tokens table only after
    /// some commit.
    pub fn tokens_fingerprint(&self) -> Result<TokensFingerprint, IndexError> {
        let mut watch = self
            .inner
            .token_watch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Asked on every authenticated request: the statements are
        // prepared once and kept by the connection.
        let version: i64 = watch
            .connection
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if watch.data_version != Some(version) {
            let fingerprint = watch
                .connection
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(MAX(created), 0), COALESCE(MAX(revoked), 0) FROM tokens",
                )?
                .query_row([], |row| {
                    Ok(TokensFingerprint {
                        rows: row.get(0)?,
                        newest_created: row.get(1)?,
                        newest_revoked: row.get(2)?,
                    })
                })?;
            watch.fingerprint = fingerprint;
            watch.data_version = Some(version);
        }
        Ok(watch.fingerprint)
    }

    /// Stores `token`.
    pub async fn create_token(&self, token: NewTokenRecord) -> Result<TokenRecord, IndexError> {
        let record = self
            .write(move |connection| {
                let record = token.record(now_ms());
                let policy = record
                    .namespaces
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| IndexError::Corrupt(e.to_string()))?;
                connection.execute(
                    "INSERT INTO tokens (id, name, scope, hash, created, expires, namespaces)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        record.id,
                        record.name,
                        record.scope.as_str(),
                        token.secret_hash,
                        record.created_ms,
                        record.expires_ms,
                        policy
                    ],
                )?;
                Ok(record)
            })
            .await?;
        self.tokens_changed();
        Ok(record)
    }

    /// The token whose secret hashes to `secret_hash`, active or not.
    pub async fn token_by_hash(
        &self,
        secret_hash: String,
    ) -> Result<Option<TokenRecord>, IndexError> {
        self.read(move |connection| {
            let found = connection
                .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"))?
                .query_row(params![secret_hash], row_to_record)
                .optional()?;
            found.map(checked).transpose()
        })
        .await
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, IndexError> {
        self.read(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM tokens ORDER BY created, id"
            ))?;
            let rows = statement.query_map([], row_to_record)?;
            rows.map(|row| checked(row?)).collect()
        })
        .await
    }

    /// Revokes the token with this id or name; returns how many were revoked.
    pub async fn revoke_token(&self, id_or_name: String) -> Result<usize, IndexError> {
        let revoked = self
            .write(move |connection| {
                Ok(connection.execute(
                    "UPDATE tokens SET revoked = ?2 WHERE (id = ?1 OR name = ?1) AND revoked IS NULL",
                    params![id_or_name, now_ms()],
                )?)
            })
            .await?;
        // Committed and published: a server's next request sees it.
        self.tokens_changed();
        Ok(revoked)
    }

    /// Whether any token is still active.
    pub async fn has_active_tokens(&self) -> Result<bool, IndexError> {
        let now = now_ms();
        Ok(self
            .tokens()
            .await?
            .iter()
            .any(|token| token.active_at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_found_by_hash_listed_and_revoked() {
        let folder = tempfile::tempdir().unwrap();
        let index = Index::open(&folder.path().join("i.sqlite")).unwrap();
        assert!(!index.has_active_tokens().await.unwrap());
        let created = index
            .create_token(NewTokenRecord {
                id: "id1".into(),
                secret_hash: token_hash("secret"),
                name: "ci".into(),
                scope: Scope::Write,
                expires_ms: None,
                namespaces: Some(NamespacePolicy {
                    default: None,
                    write: vec![cache_proto::NamespacePattern::parse("pr-1").unwrap()],
                    read: vec![cache_proto::NamespacePattern::parse("main").unwrap()],
                }),
            })
            .await
            .unwrap();
        let found = index.token_by_hash(token_hash("secret")).await.unwrap();
        assert_eq!(found, Some(created));
        assert_eq!(
            index.token_by_hash(token_hash("other")).await.unwrap(),
            None
        );
        assert!(index.has_active_tokens().await.unwrap());
        assert_eq!(index.revoke_token("ci".into()).await.unwrap(), 1);
        let revoked = index
            .token_by_hash(token_hash("secret"))
            .await
            .unwrap()
            .unwrap();
        assert!(!revoked.active_at(now_ms()));
        assert_eq!(index.tokens().await.unwrap().len(), 1);
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
    }
}
