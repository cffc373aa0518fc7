//! Registries that need no credentials, spoken to without a probe per
//! request.
//!
//! Once `oci-client` holds credentials for a registry (even anonymous ones)
//! it sends `GET /v2/` before every operation to learn whether a token is
//! needed, and it remembers only tokens: a registry that needs none is
//! probed again and again, which doubled a deploy's round trips. Here a
//! registry is probed once per process: when `/v2/` answers 200 without an
//! authentication challenge it needs no credentials, and then
//! [`super::registry::Registry`] gives `oci-client` none for it (so it never
//! probes) and pulls manifests itself (the two `oci-client` calls that
//! would store credentials); it also checks blobs, uploads small ones and
//! pushes manifests itself, so that a deploy to such a registry over plain
//! HTTP never builds `oci-client`'s client, which loads the system's TLS
//! roots. A registry that challenges, or does not
//! answer the probe, goes through `oci-client` as before. The probe goes
//! out together with the run's first manifest read, sent anonymously; its
//! answer is used only if the probe finds the registry open.
//!
//! Upload sessions can be opened ahead of their blobs
//! ([`OpenAccess::open_sessions_ahead`]): a deploy that knows it will
//! upload a new layer and config opens their sessions while the base is
//! still being resolved and packed, so that the upload is one round trip
//! (the PUT) instead of two. A session opened ahead that goes unused is
//! cancelled ([`OpenAccess::cancel_sessions_ahead`]).

use std::collections::HashMap;

use bytes::Bytes;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::oci;

/// How cachectl names itself to registries.
const USER_AGENT: &str = concat!("cachectl/", env!("CARGO_PKG_VERSION"));

/// The header that carries a manifest's digest.
const DIGEST_HEADER: &str = "docker-content-digest";

/// What this process learnt about which registries need no credentials.
#[derive(Debug)]
pub struct OpenAccess {
    /// For plain-HTTP registries: no TLS roots to load (building a client
    /// that loads them takes 2 to 4 ms here).
    plain: std::sync::OnceLock<reqwest::Client>,
    /// For HTTPS registries, built on first use.
    tls: std::sync::OnceLock<reqwest::Client>,
    /// host[:port] → whether it needs no credentials.
    known: Mutex<HashMap<String, bool>>,
    /// Upload sessions opened ahead, by the URL they were opened at
    /// (`…/blobs/uploads/`): each resolves to the session's URL.
    ahead: std::sync::Mutex<HashMap<String, Vec<SessionAhead>>>,
}

/// An upload session being opened, or opened, ahead of its blob.
type SessionAhead = JoinHandle<Result<reqwest::Url, OciDistributionError>>;

impl OpenAccess {
    /// Nothing known yet.
    pub fn new() -> Self {
        Self {
            plain: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            known: Mutex::new(HashMap::new()),
            ahead: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The client for `url`: one without TLS roots for plain HTTP.
    fn http(&self, url: &str) -> &reqwest::Client {
        if url.starts_with("http://") {
            self.plain.get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .tls_certs_only(Vec::new())
                    .build()
                    .unwrap_or_default()
            })
        } else {
            self.tls.get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .build()
                    .unwrap_or_default()
            })
        }
    }

    /// What the probe of `host` found, if it has answered already (`None`
    /// while it is not sent or not answered).
    pub fn known(&self, host: &str) -> Option<bool> {
        self.known.try_lock().ok()?.get(host).copied()
    }

    /// Whether `host` (spoken to over `scheme`) answers `/v2/` without an
    /// authentication challenge; asked once per process. A failed probe
    /// counts as "needs credentials", which is the general path.
    pub async fn is_open(&self, scheme: &str, host: &str) -> bool {
        let mut known = self.known.lock().await;
        if let Some(open) = known.get(host) {
            return *open;
        }
        let url = format!("{scheme}://{host}/v2/");
        let open = match self.http(&url).get(&url).send().await {
            Ok(response) => {
                response.status() == StatusCode::OK
                    && !response.headers().contains_key(WWW_AUTHENTICATE)
            }
            Err(error) => {
                tracing::debug!(%host, error = %error.without_url(), "registry probe failed");
                false
            }
        };
        tracing::debug!(%host, open, "registry probed");
        known.insert(host.to_owned(), open);
        open
    }

    /// Pulls the manifest at `url` (`…/manifests/{tag or digest}`), checked
    /// against `digest` when the reference names one and against the
    /// registry's digest header: its bytes and digest. Errors are
    /// `oci-client`'s, so callers classify both paths alike.
    pub async fn pull_manifest(
        &self,
        url: &str,
        digest: Option<&str>,
    ) -> Result<(Bytes, String), OciDistributionError> {
        let response = self.manifest_request(reqwest::Method::GET, url).await?;
        let status = response.status();
        let header = digest_header(response.headers());
        let body = response.bytes().await?;
        check_status(status, &body, url)?;
        let computed = oci::sha256_digest(&body);
        for expected in [digest, header.as_deref()].into_iter().flatten() {
            if expected.starts_with("sha256:") && expected != computed {
                return Err(OciDistributionError::SpecViolationError(format!(
                    "the manifest at {url} has digest {computed}, not {expected}"
                )));
            }
        }
        Ok((body, computed))
    }

    /// Whether the blob at `url` (`…/blobs/{digest}`) exists: 200 yes, 404
    /// no, anything else an error.
    pub async fn blob_exists(&self, url: &str) -> Result<bool, OciDistributionError> {
        let response = self.http(url).head(url).send().await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(server_error(status, &[], url)),
        }
    }

    /// Uploads `bytes` as blob `digest` through an upload session of
    /// `uploads` (`…/blobs/uploads/`): one opened ahead when there is one,
    /// else a POST; then one PUT with the bytes and the digest, as the
    /// distribution API requires. A session opened ahead that fails is
    /// replaced by a new one, once.
    pub async fn push_blob(
        &self,
        uploads: &str,
        bytes: Bytes,
        digest: &str,
    ) -> Result<(), OciDistributionError> {
        if let Some(session) = self.take_session_ahead(uploads).await {
            let closed = self
                .put(&with_digest(session, digest), BLOB_TYPE, bytes.clone())
                .await;
            match closed {
                Ok(()) => {
                    tracing::debug!(%digest, "uploaded through a session opened ahead");
                    return Ok(());
                }
                Err(error) => tracing::debug!(%error, "an upload session opened ahead failed"),
            }
        }
        let session = open_session(self.http(uploads), uploads).await?;
        self.put(&with_digest(session, digest), BLOB_TYPE, bytes)
            .await
    }

    /// Opens `count` upload sessions at `uploads` (`…/blobs/uploads/`) now,
    /// for [`Self::push_blob`] to use; each on a task of its own, so that
    /// they go while the caller goes on.
    pub fn open_sessions_ahead(&self, uploads: &str, count: usize) {
        tracing::debug!(%uploads, count, "opening upload sessions ahead");
        let client = self.http(uploads);
        let opening = (0..count).map(|_| {
            let (client, uploads) = (client.clone(), uploads.to_owned());
            tokio::spawn(async move { open_session(&client, &uploads).await })
        });
        self.ahead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(uploads.to_owned())
            .or_default()
            .extend(opening);
    }

    /// A session of `uploads` opened ahead, once it is open; `None` when
    /// there is none, or it could not be opened.
    async fn take_session_ahead(&self, uploads: &str) -> Option<reqwest::Url> {
        let opening = self
            .ahead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_mut(uploads)?
            .pop()?;
        match opening.await {
            Ok(Ok(session)) => Some(session),
            Ok(Err(error)) => {
                tracing::debug!(%error, "an upload session could not be opened ahead");
                None
            }
            Err(_) => None,
        }
    }

    /// Cancels the sessions opened ahead that no blob used (a `DELETE` of
    /// each, as the distribution API provides), so that the registry does
    /// not keep them until it purges stale uploads. Best effort: a failure
    /// is only logged.
    pub async fn cancel_sessions_ahead(&self) {
        let unused: Vec<SessionAhead> = self
            .ahead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .flat_map(|(_, sessions)| sessions)
            .collect();
        let cancels = unused.into_iter().map(|opening| async move {
            let Ok(Ok(session)) = opening.await else {
                return;
            };
            let cancelled = self.http(session.as_str()).delete(session.clone()).send().await;
            match cancelled.map(|response| response.status()) {
                Ok(status) if status.is_success() => {
                    tracing::debug!("cancelled an upload session opened ahead and not used");
                }
                Ok(status) => tracing::debug!(%status, "an unused upload session was not cancelled"),
                Err(error) => {
                    tracing::debug!(error = %error.without_url(), "an unused upload session was not cancelled");
                }
            }
        });
        futures::future::join_all(cancels).await;
    }

    /// Puts the manifest `bytes` of type `media_type` at `url`
    /// (`…/manifests/{tag or digest}`).
    pub async fn push_manifest(
        &self,
        url: &str,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<(), OciDistributionError> {
        self.put(url, media_type, bytes).await
    }

    /// A PUT of `bytes` (of `content_type`) to `url`, answered 201.
    async fn put(
        &self,
        url: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<(), OciDistributionError> {
        let response = self
            .http(url)
            .put(url)
            .header(CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        expect_status(status, StatusCode::CREATED, &body, url)
    }

    /// A `method` request for the manifest at `url`, accepting every
    /// manifest and index type.
    async fn manifest_request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.http(url)
            .request(method, url)
            .header(ACCEPT, oci::ACCEPTED_MANIFESTS.join(", "))
            .send()
            .await
    }
}

impl Default for OpenAccess {
    fn default() -> Self {
        Self::new()
    }
}

/// The media type of a blob's bytes.
const BLOB_TYPE: &str = "application/octet-stream";

/// Opens an upload session at `uploads` (a POST): the session's URL, the
/// `Location` the registry answered (absolute, or relative to the
/// registry, resolved against `uploads`; its query may carry the
/// registry's own state).
async fn open_session(
    client: &reqwest::Client,
    uploads: &str,
) -> Result<reqwest::Url, OciDistributionError> {
    // An explicit empty body: some fronts answer 411 to a POST without a
    // length.
    let response = client
        .post(uploads)
        .header(CONTENT_LENGTH, "0")
        .send()
        .await?;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    expect_status(status, StatusCode::ACCEPTED, &body, uploads)?;
    let location = location.ok_or(OciDistributionError::RegistryNoLocationError)?;
    resolve_session(uploads, &location)
}

/// The URL of the session at `location`, as answered to a POST to
/// `uploads`.
fn resolve_session(uploads: &str, location: &str) -> Result<reqwest::Url, OciDistributionError> {
    reqwest::Url::parse(uploads)
        .and_then(|base| base.join(location))
        .map_err(|error| OciDistributionError::UrlParseError(error.to_string()))
}

/// Where the PUT that closes `session` with blob `digest` goes: the
/// digest added to the session's query.
fn with_digest(mut session: reqwest::Url, digest: &str) -> String {
    session.query_pairs_mut().append_pair("digest", digest);
    session.to_string()
}

fn digest_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(DIGEST_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// `oci-client`'s reading of a status: 200 is an answer, anything else an
/// error of the same kind it would give (an envelope for client errors).
fn check_status(status: StatusCode, body: &[u8], url: &str) -> Result<(), OciDistributionError> {
    expect_status(status, StatusCode::OK, body, url)
}

/// Like [`check_status`], with `expected` as the answer.
fn expect_status(
    status: StatusCode,
    expected: StatusCode,
    body: &[u8],
    url: &str,
) -> Result<(), OciDistributionError> {
    match status {
        status if status == expected => Ok(()),
        StatusCode::UNAUTHORIZED => Err(OciDistributionError::UnauthorizedError {
            url: url.to_owned(),
        }),
        status if status.is_client_error() => match serde_json::from_slice::<OciEnvelope>(body) {
            Ok(envelope) => Err(OciDistributionError::RegistryError {
                envelope,
                url: url.to_owned(),
            }),
            Err(_) => Err(server_error(status, body, url)),
        },
        status => Err(server_error(status, body, url)),
    }
}

fn server_error(status: StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url: url.to_owned(),
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_url(
        uploads: &str,
        location: &str,
        digest: &str,
    ) -> Result<String, OciDistributionError> {
        Ok(with_digest(resolve_session(uploads, location)?, digest))
    }

    #[test]
    fn an_upload_session_is_closed_where_the_registry_said() {
        let uploads = "http://127.0.0.1:5000/v2/acme/app/blobs/uploads/";
        let digest = "sha256:0123";
        // Debian's registry: absolute, with its own state in the query.
        assert_eq!(
            session_url(
                uploads,
                "http://127.0.0.1:5000/v2/acme/app/blobs/uploads/u1?_state=abc",
                digest
            )
            .unwrap(),
            "http://127.0.0.1:5000/v2/acme/app/blobs/uploads/u1?_state=abc&digest=sha256%3A0123"
        );
        // Relative to the registry, no query.
        assert_eq!(
            session_url(uploads, "/v2/acme/app/blobs/uploads/u2", digest).unwrap(),
            "http://127.0.0.1:5000/v2/acme/app/blobs/uploads/u2?digest=sha256%3A0123"
        );
        // Another host (a registry behind a front): kept as given.
        assert_eq!(
            session_url(uploads, "https://uploads.example/s/u3", digest).unwrap(),
            "https://uploads.example/s/u3?digest=sha256%3A0123"
        );
    }
}
