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

use crate::key::Input;

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
}

/// The key under which the latest base of `image` is recorded.
pub fn latest_key(image: &str) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-latest-base/v1\0");
    hasher.update(image.as_bytes());
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Why the record store failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The cache server could not be reached or answered an error.
    #[error("cache server {url}: {message}")]
    Unreachable {
        /// The server.
        url: String,
        /// What happened.
        message: String,
    },
    /// A local record file could not be read or written.
    #[error("local record store {path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a non-success answer is worded.
fn refusal(status: reqwest::StatusCode) -> String {
    match status {
        reqwest::StatusCode::UNAUTHORIZED => {
            "refused the request: set a token with --cache-token / CACHECTL_CACHE_TOKEN (401)"
                .into()
        }
        reqwest::StatusCode::FORBIDDEN => {
            "refused the request: the token's scope does not allow it (403)".into()
        }
        status => format!("answered {status}"),
    }
}

/// Where records live.
#[derive(Debug, Clone)]
pub enum RecordStore {
    /// A cache server's action cache.
    Server {
        /// Base URL.
        url: String,
        /// HTTP client with short timeouts.
        client: reqwest::Client,
    },
    /// JSON files in a folder.
    Local {
        /// The folder.
        folder: PathBuf,
    },
}

impl RecordStore {
    /// Records on a cache server at `url`, sending `token` (if any) as a
    /// bearer token on every request, and trusting `extra_roots` (a private
    /// CA or a self-signed server certificate) besides the system's CAs.
    pub fn server(url: &str, token: Option<&str>, extra_roots: Vec<reqwest::Certificate>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(mut value) = token.and_then(|token| {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).ok()
        }) {
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(extra_roots)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::Server {
            url: url.trim_end_matches('/').to_owned(),
            client,
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
        let Self::Server { url, client } = self else {
            return;
        };
        // `cachectl bench` runs are not deploys.
        if std::env::var("CACHECTL_EVENTS").is_ok_and(|value| value == "off") {
            return;
        }
        let sent = client
            .post(format!("{url}{}", cache_proto::routes::EVENTS))
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
    pub fn leases(&self) -> Option<crate::lease::Leases> {
        match self {
            Self::Server { url, client } => Some(crate::lease::Leases::new(url, client.clone())),
            Self::Local { .. } => None,
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Server { url, .. } => format!("cache server {url}"),
            Self::Local { folder } => format!("local records in {}", folder.display()),
        }
    }

    /// The record under `key`, if any (a [`BaseRecord`], or another record
    /// type such as the app layer's). A record that does not parse is
    /// treated as absent (and rewritten by the next build).
    pub async fn get<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, RecordError> {
        let bytes = match self {
            Self::Server { url, client } => {
                let address = format!("{url}{}", cache_proto::routes::ac(key));
                let unreachable = |message: String| RecordError::Unreachable {
                    url: url.clone(),
                    message,
                };
                let response = client
                    .get(&address)
                    .send()
                    .await
                    .map_err(|e| unreachable(e.without_url().to_string()))?;
                match response.status() {
                    reqwest::StatusCode::NOT_FOUND => return Ok(None),
                    status if status.is_success() => response
                        .bytes()
                        .await
                        .map_err(|e| unreachable(e.without_url().to_string()))?
                        .to_vec(),
                    status => return Err(unreachable(refusal(status))),
                }
            }
            Self::Local { folder } => {
                let path = folder.join(format!("{key}.json"));
                match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => {
                        return Err(RecordError::Local {
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
    pub async fn put<T: Serialize>(&self, key: &Key, record: &T) -> Result<(), RecordError> {
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        match self {
            Self::Server { url, client } => {
                let address = format!("{url}{}", cache_proto::routes::ac(key));
                let response = client
                    .put(&address)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| RecordError::Unreachable {
                        url: url.clone(),
                        message: e.without_url().to_string(),
                    })?;
                if !response.status().is_success() {
                    return Err(RecordError::Unreachable {
                        url: url.clone(),
                        message: refusal(response.status()),
                    });
                }
                Ok(())
            }
            Self::Local { folder } => {
                let local = |source| RecordError::Local {
                    path: folder.display().to_string(),
                    source,
                };
                std::fs::create_dir_all(folder).map_err(local)?;
                // Write then rename, so a crash never leaves half a record.
                let mut staged = tempfile::NamedTempFile::new_in(folder).map_err(local)?;
                std::io::Write::write_all(&mut staged, &body).map_err(local)?;
                staged
                    .persist(folder.join(format!("{key}.json")))
                    .map_err(|e| local(e.error))?;
                Ok(())
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
        };
        store.put(&key, &record).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(record));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_miss() {
        let store = RecordStore::server("http://127.0.0.1:9", None, Vec::new());
        let error = store.get::<BaseRecord>(&latest_key("x")).await.unwrap_err();
        assert!(matches!(error, RecordError::Unreachable { .. }), "{error}");
    }
}
