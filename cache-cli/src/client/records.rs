//! Base records: what `ensure-base` remembers about a built base, kept in the
//! cache server's action cache, or in plain JSON files under the local cache
//! folder when no server is configured.
//!
//! Two entries per base: the record under its base key, and the same record
//! under a per-image "latest" key, so that a miss can say which inputs
//! changed since the last base of that image.

use std::path::PathBuf;
use std::time::Duration;

use cache_proto::Key;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ClientError;
use super::leases::Leases;
use crate::client::CacheClient;
use crate::key::Input;
use crate::replace_file::replace_file;

/// What is recorded for a built base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// Format version.
    pub version: u32,
    /// The base key.
    pub key: Key,
    /// The image repository (or `oci:DIR`).
    pub image: String,
    /// Pullable reference with digest.
    pub reference: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
    /// The inputs the key was computed from.
    pub inputs: Vec<Input>,
    /// Unix seconds of the build.
    pub created: u64,
    /// A base of package layers: the resolved plan, `name==version` in
    /// install order (what `hash --explain` shows and a bump is told by).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
}

/// The key under which the latest base of `image` is recorded.
pub fn latest_key(image: &str) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-latest-base/v1\0");
    hasher.update(image.as_bytes());
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Where records live.
#[derive(Debug, Clone)]
pub enum RecordStore {
    /// A cache server's action cache.
    Server(CacheClient),
    /// JSON files in a folder.
    Local {
        /// The folder.
        folder: PathBuf,
    },
}

impl RecordStore {
    /// Records on the cache server `client` talks to.
    pub fn server(client: CacheClient) -> Self {
        Self::Server(client)
    }

    /// The cache server, when records live on one.
    pub fn client(&self) -> Option<&CacheClient> {
        match self {
            Self::Server(client) => Some(client),
            Self::Local { .. } => None,
        }
    }

    /// Records in `folder`.
    pub fn local(folder: PathBuf) -> Self {
        Self::Local { folder }
    }

    /// Sends a deploy event to the cache server's history, best effort:
    /// bounded to two seconds, and a failure is only a debug log line.
    /// Records kept locally have no history.
    pub async fn report_event(&self, event: &cache_proto::body::DeployEvent) {
        let Self::Server(client) = self else {
            return;
        };
        // `cachectl bench` runs are not deploys.
        if std::env::var("CACHECTL_EVENTS").is_ok_and(|value| value == "off") {
            return;
        }
        let sent = client
            .request(reqwest::Method::POST, cache_proto::routes::EVENTS)
            .timeout(Duration::from_secs(2))
            .json(event)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::debug!(status = %response.status(), "deploy event refused"),
            Err(error) => tracing::debug!(error = %error.without_url(), "deploy event not sent"),
        }
    }

    /// Build leases, when the records live on a cache server.
    pub fn leases(&self) -> Option<Leases> {
        self.client().cloned().map(Leases::new)
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Server(client) => format!("cache server {}", client.url()),
            Self::Local { folder } => format!("local records in {}", folder.display()),
        }
    }

    /// The record under `key`, if any (a [`BaseRecord`], or another record
    /// type such as the app layer's). A record that does not parse is
    /// treated as absent (and rewritten by the next build).
    pub async fn get<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, ClientError> {
        let bytes = match self {
            Self::Server(client) => {
                let request = client.request(reqwest::Method::GET, &cache_proto::routes::ac(key));
                let Some(response) = client.send(request, "", true).await? else {
                    return Ok(None);
                };
                response
                    .bytes()
                    .await
                    .map_err(|e| client.unreachable(e.without_url()))?
                    .to_vec()
            }
            Self::Local { folder } => {
                let path = folder.join(format!("{key}.json"));
                match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => {
                        return Err(ClientError::Local {
                            path: path.display().to_string(),
                            source,
                        });
                    }
                }
            }
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Writes `record` under `key` (replacing what was there).
    pub async fn put<T: Serialize>(&self, key: &Key, record: &T) -> Result<(), ClientError> {
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        match self {
            Self::Server(client) => {
                let request = client
                    .request(reqwest::Method::PUT, &cache_proto::routes::ac(key))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                client.send_ok(request, "").await?;
                Ok(())
            }
            Self::Local { folder } => {
                let local = |source| ClientError::Local {
                    path: folder.display().to_string(),
                    source,
                };
                // Write then rename, so a crash never leaves half a record.
                replace_file(&folder.join(format!("{key}.json")), &body).map_err(local)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_records_round_trip() {
        let folder = tempfile::tempdir().unwrap();
        let store = RecordStore::local(folder.path().join("records"));
        let key = latest_key("oci:./build/oci");
        assert_eq!(store.get::<BaseRecord>(&key).await.unwrap(), None);
        let record = BaseRecord {
            version: 1,
            key,
            image: "oci:./build/oci".into(),
            reference: "oci:./build/oci:base-0123".into(),
            digest: "sha256:00".into(),
            inputs: Vec::new(),
            created: 1,
            plan: vec!["six==1.17.0".into()],
        };
        store.put(&key, &record).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(record));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_miss() {
        let store = RecordStore::server(CacheClient::new("http://127.0.0.1:9", None, Vec::new()));
        let error = store.get::<BaseRecord>(&latest_key("x")).await.unwrap_err();
        assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    }
}
