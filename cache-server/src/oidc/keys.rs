//! An issuer's signing keys (its JWKS), fetched when first needed, kept in
//! memory, and fetched again when they are an hour old or a token names a
//! key id they lack (a rotation), at most once per
//! [`MIN_REFRESH_INTERVAL`] so that tokens with made-up key ids cannot
//! make the server hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::config::{KeySource, is_loopback};

/// Keys older than this are fetched again before use.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// The shortest time between two fetches.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// One verification key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key.
    pub key: DecodingKey,
    /// The algorithm the JWKS pins it to, if it does.
    pub algorithm: Option<Algorithm>,
}

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Fetching failed.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a JWKS, or no usable key in it.
    #[error("{0}")]
    Document(String),
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, VerifyingKey>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// The keys of one issuer.
pub struct KeyStore {
    source: KeySource,
    client: reqwest::Client,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Keys from `source`, fetched with `client` when they come over HTTP.
    pub fn new(source: KeySource, client: reqwest::Client) -> Self {
        Self {
            source,
            client,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The key `kid`, fetching the set first when it is old or lacks it
    /// (and the last fetch is not too recent). `Ok(None)`: no such key.
    /// A failed fetch keeps the keys already known.
    pub async fn key(&self, kid: &str) -> Result<Option<VerifyingKey>, Arc<KeyError>> {
        let mut cached = self.cached.lock().await;
        let stale = cached.fetched.is_none_or(|at| at.elapsed() > MAX_KEY_AGE);
        let may_fetch = cached
            .attempted
            .is_none_or(|at| at.elapsed() >= MIN_REFRESH_INTERVAL);
        let mut failure = None;
        if (stale || !cached.keys.contains_key(kid)) && may_fetch {
            cached.attempted = Some(Instant::now());
            match self.load().await {
                Ok(keys) => {
                    tracing::info!(source = ?self.source, keys = keys.len(), "OIDC keys loaded");
                    cached.keys = keys;
                    cached.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(source = ?self.source, "OIDC keys not loaded: {e}");
                    failure = Some(Arc::new(e));
                }
            }
        }
        match (cached.keys.get(kid), failure) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, Some(failure)) if cached.keys.is_empty() => Err(failure),
            (None, _) => Ok(None),
        }
    }

    async fn load(&self) -> Result<HashMap<String, VerifyingKey>, KeyError> {
        let document = match &self.source {
            KeySource::File(path) => std::fs::read(path).map_err(|source| KeyError::File {
                path: path.display().to_string(),
                source,
            })?,
            KeySource::Url(url) => self.fetch(url).await?,
            KeySource::Discovery(issuer) => {
                let jwks = self.discover(issuer).await?;
                self.fetch(&jwks).await?
            }
        };
        parse_jwks(&document)
    }

    /// The `jwks_uri` of `issuer`'s discovery document.
    async fn discover(&self, issuer: &Url) -> Result<Url, KeyError> {
        let mut url = issuer.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            url.path().trim_end_matches('/')
        );
        url.set_path(&path);
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let body = self.fetch(&url).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| KeyError::Document(format!("{url}: not a discovery document: {e}")))?;
        let jwks = Url::parse(&discovery.jwks_uri)
            .map_err(|e| KeyError::Document(format!("{url}: jwks_uri: {e}")))?;
        if jwks.scheme() != "https" && !(jwks.scheme() == "http" && is_loopback(&jwks)) {
            return Err(KeyError::Document(format!(
                "{url}: jwks_uri {jwks} is not https"
            )));
        }
        Ok(jwks)
    }

    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, KeyError> {
        let failed = |message: String| KeyError::Fetch {
            url: url.to_string(),
            message,
        };
        let response = self
            .client
            .get(url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(failed("the document is larger than 1 MiB".into()));
        }
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(failed("the document is larger than 1 MiB".into()));
        }
        Ok(body.to_vec())
    }
}

/// The signing keys of a JWKS by key id. Keys of other uses, without an
/// id, or of kinds this server cannot verify are left out (one odd key
/// must not make the issuer's other keys unusable).
pub fn parse_jwks(document: &[u8]) -> Result<HashMap<String, VerifyingKey>, KeyError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(document)
        .map_err(|e| KeyError::Document(format!("not a JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match jwk.common.key_algorithm {
            Some(alg) => match Algorithm::try_from(alg) {
                Ok(alg) => Some(alg),
                Err(_) => continue,
            },
            None => None,
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, VerifyingKey { key, algorithm });
        }
    }
    if keys.is_empty() {
        return Err(KeyError::Document(
            "the JWKS holds no usable signing key".into(),
        ));
    }
    Ok(keys)
}
