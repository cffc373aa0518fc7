//! Build leases: of N CI jobs missing the same key at once, one builds and
//! the others wait for its result. A lease lapses at its expiry unless its
//! holder renews it, so a crashed builder blocks nobody for long.

use cache_proto::body::Lease;
use rusqlite::{OptionalExtension, params};

use super::{Index, IndexError, now_ms};

/// The answer to an acquire or a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Granted (or renewed, for the same holder).
    Granted(Lease),
    /// Another holder has it until its expiry.
    Held(Lease),
    /// Released.
    Released,
    /// Nobody holds it.
    Free,
}

/// The holder and expiry of the lease on `key`, expired or not.
fn current_lease(
    connection: &rusqlite::Connection,
    key: &str,
) -> Result<Option<(String, i64)>, IndexError> {
    Ok(connection
        .query_row(
            "SELECT holder, expires_at FROM leases WHERE key = ?1",
            params![key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

impl Index {
    /// Grants the lease named `key` (a build key, or `eviction`) to `holder` for `ttl_ms` unless another
    /// holder has an unexpired one. The same holder renews.
    pub async fn acquire_lease(
        &self,
        key: String,
        holder: String,
        ttl_ms: i64,
    ) -> Result<LeaseOutcome, IndexError> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            let now = now_ms();
            let current = current_lease(&transaction, &key)?;
            if let Some((other, expires_at_ms)) = current
                && other != holder
                && expires_at_ms > now
            {
                return Ok(LeaseOutcome::Held(Lease { holder: other, expires_at_ms }));
            }
            let expires_at_ms = now + ttl_ms;
            transaction.execute(
                "INSERT INTO leases (key, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                params![key, holder, expires_at_ms],
            )?;
            transaction.commit()?;
            Ok(LeaseOutcome::Granted(Lease { holder, expires_at_ms }))
        })
        .await
    }

    /// Releases the lease on `key` if `holder` has it.
    pub async fn release_lease(
        &self,
        key: String,
        holder: String,
    ) -> Result<LeaseOutcome, IndexError> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            let now = now_ms();
            let current = current_lease(&transaction, &key)?;
            let outcome = match current {
                Some((other, expires_at_ms)) if other != holder && expires_at_ms > now => {
                    LeaseOutcome::Held(Lease {
                        holder: other,
                        expires_at_ms,
                    })
                }
                Some((other, _)) if other == holder => {
                    transaction.execute("DELETE FROM leases WHERE key = ?1", params![key])?;
                    LeaseOutcome::Released
                }
                _ => LeaseOutcome::Free,
            };
            transaction.commit()?;
            Ok(outcome)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_until_release_or_expiry() {
        let folder = tempfile::tempdir().unwrap();
        let index = Index::open(&folder.path().join("i.sqlite")).unwrap();
        let key = || "k".to_owned();
        let granted = index
            .acquire_lease(key(), "a".into(), 60_000)
            .await
            .unwrap();
        assert!(matches!(granted, LeaseOutcome::Granted(ref l) if l.holder == "a"));
        let held = index
            .acquire_lease(key(), "b".into(), 60_000)
            .await
            .unwrap();
        assert!(matches!(held, LeaseOutcome::Held(ref l) if l.holder == "a"));
        assert!(matches!(
            index
                .acquire_lease(key(), "a".into(), 60_000)
                .await
                .unwrap(),
            LeaseOutcome::Granted(_)
        ));
        assert!(matches!(
            index.release_lease(key(), "b".into()).await.unwrap(),
            LeaseOutcome::Held(_)
        ));
        assert_eq!(
            index.release_lease(key(), "a".into()).await.unwrap(),
            LeaseOutcome::Released
        );
        assert_eq!(
            index.release_lease(key(), "a".into()).await.unwrap(),
            LeaseOutcome::Free
        );

        // An expired lease goes to the next asker.
        index.acquire_lease(key(), "a".into(), -1).await.unwrap();
        assert!(
            matches!(index.acquire_lease(key(), "b".into(), 60_000).await.unwrap(), LeaseOutcome::Granted(ref l) if l.holder == "b")
        );
    }
}
