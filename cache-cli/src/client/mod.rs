//! The one cache-server client of `cachectl`: the HTTP client (timeouts,
//! the bearer token, extra CA roots), how a refusal is worded, and the
//! error every call returns. [`records`] keeps base and app records (on
//! the server or in local files), [`leases`] the build leases, [`cas`] the
//! content-addressed blobs of the folder cache and `cachectl cas`;
//! [`identity`] fetches a CI job's ID token to present instead of a token.

pub mod cas;
pub mod identity;
pub mod leases;
pub mod records;

use std::time::Duration;

use cache_proto::{Namespace, namespace};

/// Why a call to the cache (or the local record store) failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cache server could not be reached or answered an error.
    #[error("cache server {url}: {message}")]
    Unreachable {
        /// The server.
        url: String,
        /// What happened.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("local record store {path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A cache server: its base URL and an HTTP client that sends the token.
#[derive(Debug, Clone)]
pub struct CacheClient {
    url: String,
    http: reqwest::Client,
    namespace: Option<Namespace>,
}

/// How a non-success answer is worded.
fn refusal(status: reqwest::StatusCode) -> String {
    match status {
        reqwest::StatusCode::UNAUTHORIZED => {
            "refused the request: set a token with --cache-token / CACHECTL_CACHE_TOKEN (401)"
                .into()
        }
        reqwest::StatusCode::FORBIDDEN => {
            "refused the request: the token's scope or namespaces do not allow it (403)".into()
        }
        status => format!("answered {status}"),
    }
}

/// `what` (the call, may be empty) and `outcome` as one message.
fn described(what: &str, outcome: &str) -> String {
    if what.is_empty() {
        outcome.to_owned()
    } else {
        format!("{what} {outcome}")
    }
}

impl CacheClient {
    /// The server at `url`, sending `token` (if any) as a bearer token on
    /// every request, and trusting `extra_roots` (a private CA or a
    /// self-signed server certificate) besides the system's CAs.
    pub fn new(url: &str, token: Option<&str>, extra_roots: Vec<reqwest::Certificate>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(mut value) = token.and_then(|token| {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).ok()
        }) {
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .tls_certs_merge(extra_roots)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
            namespace: None,
        }
    }

    /// The same client naming `namespace` on every request (the
    /// `X-Cachectl-Namespace` header); `None` leaves it to the server (the
    /// token's default, else `default`).
    pub fn in_namespace(mut self, namespace: Option<Namespace>) -> Self {
        self.namespace = namespace;
        self
    }

    /// The server's base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A request to `route` (a path such as `cache_proto::routes::ac(key)`).
    pub fn request(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{route}", self.url));
        match &self.namespace {
            Some(namespace) => request.header(namespace::HEADER, namespace.as_str()),
            None => request,
        }
    }

    /// The error for this server saying `message`.
    pub fn unreachable(&self, message: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }

    /// Sends `request`; a success is the response, a `404` is `None` (when
    /// `absent_ok`), anything else an error naming `what`.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        absent_ok: bool,
    ) -> Result<Option<reqwest::Response>, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(e.without_url()))?;
        match response.status() {
            status if status.is_success() => Ok(Some(response)),
            reqwest::StatusCode::NOT_FOUND if absent_ok => Ok(None),
            status => Err(self.unreachable(described(what, &refusal(status)))),
        }
    }

    /// Sends `request`, which must succeed.
    pub async fn send_ok(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(request, what, false)
            .await?
            .ok_or_else(|| self.unreachable(described(what, "answered 404 Not Found")))
    }
}
