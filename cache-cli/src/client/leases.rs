//! Build leases on the cache server: of N CI jobs that miss the same key at
//! once, the one that gets the lease builds; the others wait for its record.

use std::time::Duration;

use cache_proto::Key;
use cache_proto::body::{Lease, LeaseRequest};

use super::{CacheClient, ClientError};

/// How long a lease lasts unless renewed; the builder renews it every third
/// of that, so a crashed builder blocks the others for at most this long.
pub const TTL: Duration = Duration::from_secs(60);

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Ours: build.
    Granted,
    /// Someone else's: wait for their result.
    Held(Lease),
}

/// A lease client for one run.
#[derive(Debug, Clone)]
pub struct Leases {
    client: CacheClient,
    holder: String,
}

/// A holder id unique to this process: host, pid and a random part.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let random = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!("{host}-{}-{}", std::process::id(), &random.to_hex()[..8])
}

impl Leases {
    /// Leases on the cache server `client` talks to.
    pub fn new(client: CacheClient) -> Self {
        Self {
            client,
            holder: holder_id(),
        }
    }

    /// Who we are.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Asks for (or renews) the lease on `key`.
    pub async fn acquire(&self, key: &Key) -> Result<Acquired, ClientError> {
        let request = LeaseRequest {
            holder: self.holder.clone(),
            ttl_seconds: TTL.as_secs(),
        };
        let response = self
            .client
            .request(reqwest::Method::POST, &cache_proto::routes::lease(key))
            .json(&request)
            .send()
            .await
            .map_err(|e| self.client.unreachable(e.without_url()))?;
        match response.status() {
            reqwest::StatusCode::CREATED => Ok(Acquired::Granted),
            reqwest::StatusCode::CONFLICT => {
                let lease = response
                    .json::<Lease>()
                    .await
                    .map_err(|e| self.client.unreachable(e.without_url()))?;
                Ok(Acquired::Held(lease))
            }
            status => Err(self
                .client
                .unreachable(format!("lease request answered {status}"))),
        }
    }

    /// Gives the lease on `key` back (best effort).
    pub async fn release(&self, key: &Key) {
        let result = self
            .client
            .request(reqwest::Method::DELETE, &cache_proto::routes::lease(key))
            .query(&[("holder", &self.holder)])
            .send()
            .await;
        if let Err(error) = result {
            tracing::debug!(error = %error.without_url(), "releasing the lease failed; it will lapse");
        }
    }

    /// Renews the lease on `key` every third of its TTL until dropped.
    pub fn keep_alive(&self, key: Key) -> KeepAlive {
        let leases = self.clone();
        KeepAlive(tokio::spawn(async move {
            loop {
                tokio::time::sleep(TTL / 3).await;
                if let Err(error) = leases.acquire(&key).await {
                    tracing::warn!(%error, "could not renew the build lease");
                }
            }
        }))
    }
}

/// Renews a lease while alive.
pub struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}
