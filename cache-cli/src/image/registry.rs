//! Registry access through `oci-client`: manifests by tag or digest, blobs
//! with a HEAD before every upload (its `push()` re-uploads everything)
//! except small ones the caller has just made (see [`Presence`]); a
//! registry that needs no credentials gets its manifest reads, blob checks,
//! small uploads and manifest pushes from cachectl's own client,
//! cross-repository mounts with a fallback to copying, credentials from flags
//! or the Docker config and its credential helpers. A registry that needs no
//! credentials is spoken to without `oci-client`'s probe before every
//! request (see [`super::open_access`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::digest_cache::DigestCache;
use super::known_layers::KnownLayers;
use super::oci::{self, ACCEPTED_MANIFESTS, Platform};
use super::open_access::OpenAccess;
use super::pushed_trees::{PushedTree, PushedTrees};

use crate::exit::Exit;

/// Connection settings.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Username for every registry (else the Docker config is asked).
    pub user: Option<String>,
    /// Password for every registry.
    pub password: Option<String>,
    /// Registries (host[:port]) spoken to over plain HTTP. `localhost` and
    /// `127.0.0.1` always are.
    pub insecure: Vec<String>,
    /// Where manifests and configs pulled by digest are kept, if anywhere.
    pub digest_cache: Option<PathBuf>,
    /// Where the marks of [`KnownLayers`] are kept, if anywhere.
    pub known_layers: Option<PathBuf>,
    /// Where the entries of [`PushedTrees`] are kept, if anywhere.
    pub pushed_trees: Option<PathBuf>,
}

/// A registry failure, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable {
        /// host[:port].
        registry: String,
        /// Why.
        message: String,
    },
    /// The registry refused our credentials.
    #[error("registry {registry} refused the credentials: {message}")]
    Auth {
        /// host[:port].
        registry: String,
        /// Why.
        message: String,
    },
    /// What was asked for is not there (a manifest, a tag, a platform).
    #[error("registry {registry}: {message}")]
    NotFound {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
    /// The registry answered and refused the request (a manifest naming
    /// blobs it lacks, deletes disabled, a server error).
    #[error("registry {registry}: {message}")]
    Refused {
        /// host[:port].
        registry: String,
        /// The HTTP status, when the answer had one.
        status: Option<u16>,
        /// What it said.
        message: String,
    },
    /// A reference, media type or answer cachectl cannot use.
    #[error("registry {registry}: {message}")]
    Invalid {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
    /// A local file of the transfer could not be read or written.
    #[error("registry {registry}: {message}")]
    Local {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
}

impl RegistryError {
    /// Unreachable or refusing our credentials: exit 3; anything else: 1.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Unreachable { .. } | Self::Auth { .. } => Exit::Unreachable,
            Self::NotFound { .. }
            | Self::Refused { .. }
            | Self::Invalid { .. }
            | Self::Local { .. } => Exit::Failed,
        }
    }
}

/// What the caller knows of whether the registry has a blob it uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Nothing: ask first (a HEAD), upload only when absent.
    Unknown,
    /// Just made from new content (a changed app's layer, its config): a
    /// blob up to [`UPLOAD_WITHOUT_ASKING`] bytes is uploaded at once,
    /// since asking costs a round trip and uploading so few bytes about one
    /// more. A larger one is still asked for first.
    ProbablyAbsent,
}

/// The largest blob uploaded without asking first (see [`Presence`]):
/// 64 KiB take about 5 ms at 100 Mbit/s, less than a round trip to most
/// registries that are not on the same machine.
pub const UPLOAD_WITHOUT_ASKING: u64 = 64 * 1024;

impl Presence {
    /// Whether a blob of `size` bytes is asked for before it is uploaded.
    fn ask_first(self, size: u64) -> bool {
        self == Self::Unknown || size > UPLOAD_WITHOUT_ASKING
    }
}

/// How a blob came to be in the target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// It was there already.
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Copied, this many bytes.
    Copied(u64),
}

impl Transfer {
    /// Bytes uploaded.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Copied(bytes) => bytes,
            _ => 0,
        }
    }
}

/// A manifest as pulled.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its digest.
    pub digest: String,
    /// Parsed.
    pub json: Value,
    /// Its media type.
    pub media_type: String,
}

/// A registry client for one process run.
pub struct Registry {
    client: OciClient,
    plain_http: Vec<String>,
    settings: RegistrySettings,
    auth: Mutex<HashMap<String, RegistryAuth>>,
    digests: Option<DigestCache>,
    known_layers: Option<KnownLayers>,
    pushed_trees: Option<PushedTrees>,
    open: OpenAccess,
}

/// The `oci-client` client, built on a thread of its own or on first use:
/// building one loads the system's TLS roots twice (2 to 4 ms each here,
/// where `SSL_CERT_DIR` makes rustls read every file of `/etc/ssl/certs`;
/// a third of a warm deploy's CPU), which the first requests of a run (the
/// registry probe, manifests by tag) do not need and so overlap, and which
/// a run against open plain-HTTP registries does not need at all.
struct OciClient {
    plain: Vec<String>,
    building: Mutex<Option<tokio::sync::oneshot::Receiver<Client>>>,
    built: tokio::sync::OnceCell<Client>,
}

impl OciClient {
    /// A client that speaks plain HTTP to `plain`: started now when `early`
    /// (the run talks to an HTTPS registry, which goes through
    /// `oci-client`), else built on first use, which a run against open
    /// plain-HTTP registries may never make (cachectl speaks to those
    /// itself, see [`super::open_access`]).
    fn start(plain: Vec<String>, early: bool) -> Self {
        let building = early.then(|| {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let config = Self::config(&plain);
            std::thread::spawn(move || {
                // The receiver may be gone: a run that never needed it.
                let _ = sender.send(Client::new(config));
            });
            receiver
        });
        Self {
            plain,
            building: Mutex::new(building),
            built: tokio::sync::OnceCell::new(),
        }
    }

    fn config(plain: &[String]) -> ClientConfig {
        ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain.to_vec()),
            use_monolithic_push: true,
            ..ClientConfig::default()
        }
    }

    /// The client, waiting for it to be built.
    async fn get(&self) -> &Client {
        self.built
            .get_or_init(|| async {
                let building = self
                    .building
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                match building {
                    Some(receiver) => match receiver.await {
                        Ok(client) => client,
                        // The building thread died: build it here.
                        Err(_) => Client::new(Self::config(&self.plain)),
                    },
                    None => Client::new(Self::config(&self.plain)),
                }
            })
            .await
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(name, _)| name).unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Parses `[registry/]repository[:tag][@digest]` the way Docker does
/// (`busybox` is `docker.io/library/busybox:latest`).
///
/// Written here rather than through `Reference::from_str`, whose Unicode
/// regex takes ~40 ms to compile on every start: most of a warm
/// `ensure-base`.
pub fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    let invalid = |why: &str| RegistryError::Invalid {
        registry: text.to_owned(),
        message: format!("invalid image reference: {why}"),
    };
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), remainder.to_owned())
        }
        _ if name.contains('/') => ("docker.io".to_owned(), name.to_owned()),
        _ => ("docker.io".to_owned(), format!("library/{name}")),
    };
    let repository_ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !repository_ok {
        return Err(invalid(
            "the repository must be lowercase letters, digits, '.', '_', '-' and '/'",
        ));
    }
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(invalid(
            "the tag must be 1 to 128 letters, digits, '.', '_' or '-'",
        ));
    }
    match digest {
        Some(digest) => {
            let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
                !algorithm.is_empty()
                    && hex.len() >= 32
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !valid {
                return Err(invalid("the digest must be algorithm:hex"));
            }
            Ok(Reference::with_digest(
                registry,
                repository,
                digest.to_owned(),
            ))
        }
        None => Ok(Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or("latest").to_owned(),
        )),
    }
}

impl Registry {
    /// A client that speaks plain HTTP to loopback registries, to the
    /// `insecure` ones and to `extra_plain` (e.g. the hosts of a run's images
    /// when they are loopback).
    pub fn new(settings: RegistrySettings, hosts: &[&str]) -> Self {
        let mut plain: Vec<String> = settings.insecure.clone();
        plain.extend(
            hosts
                .iter()
                .filter(|h| is_loopback(h))
                .map(|h| (*h).to_owned()),
        );
        Self {
            client: OciClient::start(
                plain.clone(),
                hosts.is_empty() || hosts.iter().any(|host| !plain.iter().any(|p| p == host)),
            ),
            plain_http: plain,
            digests: settings.digest_cache.clone().map(DigestCache::new),
            known_layers: settings.known_layers.clone().map(KnownLayers::new),
            pushed_trees: settings.pushed_trees.clone().map(PushedTrees::new),
            settings,
            auth: Mutex::new(HashMap::new()),
            open: OpenAccess::new(),
        }
    }

    /// The `oci-client` client, once built.
    async fn client(&self) -> &Client {
        self.client.get().await
    }

    /// Whether `host` is spoken to over plain HTTP.
    pub fn speaks_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.plain_http.iter().any(|h| h == host)
    }

    /// The username and password given for every registry, if any (else
    /// each registry's come from the Docker config).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match (&self.settings.user, &self.settings.password) {
            (Some(user), Some(password)) => Some((user, password)),
            _ => None,
        }
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        let mut cache = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(registry.to_owned())
            .or_insert_with(|| match (&self.settings.user, &self.settings.password) {
                (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.clone()),
                _ => match docker_credential::get_credential(registry) {
                    Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                        RegistryAuth::Basic(user, password)
                    }
                    Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                        RegistryAuth::Bearer(token)
                    }
                    Err(_) => RegistryAuth::Anonymous,
                },
            })
            .clone()
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.speaks_plain_http(host) {
            "http"
        } else {
            "https"
        }
    }

    /// Whether `reference`'s registry needs no credentials (probed once).
    async fn is_open(&self, reference: &Reference) -> bool {
        let host = reference.resolve_registry();
        self.open.is_open(self.scheme(host), host).await
    }

    /// The answer to `read` (an anonymous request) when `reference`'s
    /// registry needs no credentials; `None` when it needs them. A registry
    /// not probed yet in this run is probed while `read` goes, not before
    /// it: the run's first read takes one round trip instead of two, and a
    /// registry that turns out to need credentials only sees the anonymous
    /// reads sent before the probe answered (one, or the few a run sends at
    /// once at its start), whose answers are dropped.
    async fn read_if_open<T>(
        &self,
        reference: &Reference,
        read: impl Future<Output = Result<T, OciDistributionError>>,
    ) -> Option<Result<T, OciDistributionError>> {
        match self.open.known(reference.resolve_registry()) {
            Some(true) => Some(read.await),
            Some(false) => None,
            None => {
                let (open, answer) = tokio::join!(self.is_open(reference), read);
                open.then_some(answer)
            }
        }
    }

    /// The URL of `reference`'s manifest (by digest when it names one).
    fn manifest_url(&self, reference: &Reference) -> String {
        let host = reference.resolve_registry();
        format!(
            "{}://{host}/v2/{}/manifests/{}",
            self.scheme(host),
            reference.repository(),
            reference.digest().or(reference.tag()).unwrap_or("latest")
        )
    }

    /// Gives `oci-client` the credentials for `reference`'s registry,
    /// unless it needs none: then `oci-client` holds nothing for it and
    /// sends its requests without probing `/v2/` first.
    async fn authenticate(&self, reference: &Reference) {
        if self.is_open(reference).await {
            return;
        }
        let registry = reference.resolve_registry();
        let auth = self.auth_for(registry);
        self.client()
            .await
            .store_auth_if_needed(registry, &auth)
            .await;
    }

    /// The credentials for `reference`'s registry, given to `oci-client`
    /// too (see [`Self::authenticate`]), for the calls that take them.
    async fn authenticated(&self, reference: &Reference) -> RegistryAuth {
        self.authenticate(reference).await;
        self.auth_for(reference.resolve_registry())
    }

    fn classify(reference: &Reference, error: OciDistributionError) -> RegistryError {
        let registry = reference.registry().to_owned();
        match error {
            OciDistributionError::RequestError(error)
                if error.is_connect() || error.is_timeout() =>
            {
                RegistryError::Unreachable {
                    registry,
                    message: error.without_url().to_string(),
                }
            }
            // A 401/403 answered to a blob HEAD or upload arrives as a plain
            // HTTP status error, not as oci-client's own auth variants.
            OciDistributionError::RequestError(error)
                if error.status().is_some_and(|status| {
                    status == reqwest::StatusCode::UNAUTHORIZED
                        || status == reqwest::StatusCode::FORBIDDEN
                }) =>
            {
                RegistryError::Auth {
                    registry,
                    message: error.without_url().to_string(),
                }
            }
            OciDistributionError::AuthenticationFailure(message) => {
                RegistryError::Auth { registry, message }
            }
            OciDistributionError::UnauthorizedError { .. } => RegistryError::Auth {
                registry,
                message: "401 Unauthorized".into(),
            },
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                RegistryError::Auth {
                    registry,
                    message: envelope.to_string(),
                }
            }
            OciDistributionError::ServerError { code: 401, .. } => RegistryError::Auth {
                registry,
                message: "401 Unauthorized".into(),
            },
            ref error if Self::is_not_found(error) => RegistryError::NotFound {
                registry,
                message: error.to_string(),
            },
            OciDistributionError::ServerError { code, .. } => RegistryError::Refused {
                registry,
                status: Some(code),
                message: error.to_string(),
            },
            OciDistributionError::RequestError(ref request) if request.status().is_some() => {
                RegistryError::Refused {
                    registry,
                    status: request.status().map(|status| status.as_u16()),
                    message: error.to_string(),
                }
            }
            OciDistributionError::RegistryError { .. } => RegistryError::Refused {
                registry,
                status: None,
                message: error.to_string(),
            },
            other => RegistryError::Invalid {
                registry,
                message: other.to_string(),
            },
        }
    }

    /// Whether `error` says the manifest does not exist.
    fn is_not_found(error: &OciDistributionError) -> bool {
        match error {
            OciDistributionError::ImageManifestNotFoundError(_)
            | OciDistributionError::ServerError { code: 404, .. } => true,
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .all(|e| e.code == OciErrorCode::ManifestUnknown),
            _ => false,
        }
    }

    /// The manifest digest `reference` (a tag) points at, or `None`.
    pub async fn resolve(&self, reference: &Reference) -> Result<Option<String>, RegistryError> {
        let url = self.manifest_url(reference);
        // An open registry is asked with a GET rather than a HEAD: the
        // manifest comes with its digest and is kept by it, so a run that
        // reads it next (a deploy reads its base's manifest) asks no more,
        // for a few kilobytes. Registries that count manifest GETs as pulls
        // (Docker Hub) challenge for credentials: never open.
        let read = async {
            let (bytes, digest) = self.open.pull_manifest(&url, reference.digest()).await?;
            if let Some(cache) = &self.digests {
                cache.put(&digest, &bytes);
            }
            Ok(digest)
        };
        let fetched = match self.read_if_open(reference, read).await {
            Some(fetched) => fetched,
            None => {
                let auth = self.authenticated(reference).await;
                self.client()
                    .await
                    .fetch_manifest_digest(reference, &auth)
                    .await
            }
        };
        match fetched {
            Ok(digest) => Ok(Some(digest)),
            Err(error) if Self::is_not_found(&error) => Ok(None),
            Err(error) => Err(Self::classify(reference, error)),
        }
    }

    /// The digest of the image `reference` (a tag) names for `platform`,
    /// in one request: the manifest's own digest, or, for an index, the
    /// digest of its entry for `platform` (so that a new image for another
    /// platform under the same tag changes nothing). `None` when the tag
    /// does not exist.
    pub async fn platform_digest(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Option<String>, RegistryError> {
        let Some(pulled) = self.pull_if_present(reference).await? else {
            return Ok(None);
        };
        if !oci::is_index(&pulled.media_type) {
            return Ok(Some(pulled.digest));
        }
        Self::platform_entry(reference, &pulled, platform).map(Some)
    }

    /// The digest of `index`'s entry for `platform`.
    fn platform_entry(
        reference: &Reference,
        index: &PulledManifest,
        platform: &Platform,
    ) -> Result<String, RegistryError> {
        index.json["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| platform.matches(&entry["platform"]))
            .and_then(|entry| entry["digest"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::NotFound {
                registry: reference.registry().to_owned(),
                message: format!("{reference} has no image for platform {platform}"),
            })
    }

    /// Pulls a manifest; an index is resolved to `platform`'s manifest.
    pub async fn pull_manifest(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest, RegistryError> {
        let pulled = self.pull_manifest_as_is(reference).await?;
        if oci::is_index(&pulled.media_type) {
            let entry = Self::platform_entry(reference, &pulled, platform)?;
            let by_digest = reference.clone_with_digest(entry);
            return self.pull_manifest_as_is(&by_digest).await;
        }
        Ok(pulled)
    }

    /// Pulls a manifest or an index as it is.
    pub async fn pull_manifest_as_is(
        &self,
        reference: &Reference,
    ) -> Result<PulledManifest, RegistryError> {
        self.pull_if_present(reference)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                registry: reference.registry().to_owned(),
                message: format!("{reference}: manifest unknown"),
            })
    }

    /// Pulls a manifest or an index as it is; `None` when it does not exist.
    async fn pull_if_present(
        &self,
        reference: &Reference,
    ) -> Result<Option<PulledManifest>, RegistryError> {
        // What a digest names never changes: kept from an earlier pull.
        let kept = reference.digest().and_then(|digest| {
            let bytes = self.digests.as_ref()?.get(digest)?;
            Some((Bytes::from(bytes), digest.to_owned()))
        });
        let (bytes, digest) = match kept {
            Some(kept) => kept,
            None => {
                let url = self.manifest_url(reference);
                let read = self.open.pull_manifest(&url, reference.digest());
                let pulled = match self.read_if_open(reference, read).await {
                    Some(pulled) => pulled,
                    None => {
                        let auth = self.authenticated(reference).await;
                        self.client()
                            .await
                            .pull_manifest_raw(reference, &auth, ACCEPTED_MANIFESTS)
                            .await
                    }
                };
                let pulled = match pulled {
                    Ok(pulled) => pulled,
                    Err(error) if Self::is_not_found(&error) => return Ok(None),
                    Err(error) => return Err(Self::classify(reference, error)),
                };
                if let Some(cache) = &self.digests {
                    cache.put(&pulled.1, &pulled.0);
                }
                pulled
            }
        };
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            registry: reference.registry().to_owned(),
            message: format!("manifest of {reference} is not JSON: {e}"),
        })?;
        let media_type = match json["mediaType"].as_str() {
            Some(media_type) => media_type.to_owned(),
            None if json["manifests"].is_array() => oci::OCI_INDEX.to_owned(),
            None => oci::OCI_MANIFEST.to_owned(),
        };
        Ok(Some(PulledManifest {
            bytes,
            digest,
            json,
            media_type,
        }))
    }

    /// Reads a (small) blob into memory, e.g. an image config.
    pub async fn pull_small_blob(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        if let Some(kept) = self.digests.as_ref().and_then(|cache| cache.get(digest)) {
            return Ok(kept);
        }
        self.authenticate(reference).await;
        let mut out = Vec::new();
        self.client()
            .await
            .pull_blob(reference, digest, &mut out)
            .await
            .map_err(|e| Self::classify(reference, e))?;
        if let Some(cache) = &self.digests {
            cache.put(digest, &out);
        }
        Ok(out)
    }

    /// Streams blob `digest` of `source` into `file`.
    pub async fn pull_blob_to_file(
        &self,
        source: &Reference,
        digest: &str,
        file: &Path,
    ) -> Result<(), RegistryError> {
        self.authenticate(source).await;
        let out = tokio::fs::File::create(file)
            .await
            .map_err(|e| RegistryError::Local {
                registry: source.registry().to_owned(),
                message: format!("cannot write {}: {e}", file.display()),
            })?;
        self.client()
            .await
            .pull_blob(source, digest, out)
            .await
            .map_err(|e| Self::classify(source, e))
    }

    /// Whether `target`'s repository is known to hold every layer of the
    /// image whose manifest is `manifest_digest` (see [`KnownLayers`]).
    pub fn layers_known(&self, target: &Reference, manifest_digest: &str) -> bool {
        self.known_layers
            .as_ref()
            .is_some_and(|known| known.contains(&repository_of(target), manifest_digest))
    }

    /// Marks (`true`) or unmarks `target`'s repository as holding every
    /// layer of `manifest_digest`.
    pub fn set_layers_known(&self, target: &Reference, manifest_digest: &str, known: bool) {
        if let Some(marks) = &self.known_layers {
            match known {
                true => marks.insert(&repository_of(target), manifest_digest),
                false => marks.remove(&repository_of(target), manifest_digest),
            }
        }
    }

    /// Opens upload sessions in `target`'s repository for an app whose
    /// tree is `tree` (awaited only when this machine pushed there before,
    /// so that a fresh runner never waits for it here), ahead of its blobs
    /// (see [`super::pushed_trees`]): when the registry needs no
    /// credentials and the last app this machine pushed there had another
    /// tree, the new layer and config will go up; two sessions, or one
    /// (the config's) when the last layer was too large to go up without
    /// asking. Returns once they are asked for; they open while the caller
    /// goes on.
    pub async fn open_uploads_ahead(
        &self,
        target: &Reference,
        tree: impl Future<Output = Option<[u8; 32]>>,
    ) {
        let Some(last) = self
            .pushed_trees
            .as_ref()
            .and_then(|trees| trees.get(&repository_of(target)))
        else {
            return;
        };
        // An entry is only written for a registry found open, so the
        // sessions go now, without waiting for this run's probe; should
        // the registry need credentials now, they are refused and unused.
        if self.open.known(target.resolve_registry()) == Some(false) {
            return;
        }
        match tree.await {
            Some(tree) if tree != last.tree => {}
            _ => return,
        }
        let count = if last.layer_bytes <= UPLOAD_WITHOUT_ASKING {
            2
        } else {
            1
        };
        self.open
            .open_sessions_ahead(&self.blob_url(target, "uploads/"), count);
    }

    /// Remembers that the app of `tree`, whose layer is `layer_bytes`, is
    /// in `target`'s repository now; only for a registry that needs no
    /// credentials, the only kind sessions are opened ahead for.
    pub fn note_pushed_tree(&self, target: &Reference, tree: &[u8; 32], layer_bytes: u64) {
        if let Some(trees) = &self.pushed_trees
            && self.open.known(target.resolve_registry()) == Some(true)
        {
            let pushed = PushedTree {
                tree: *tree,
                layer_bytes,
            };
            trees.insert(&repository_of(target), pushed);
        }
    }

    /// Cancels the upload sessions opened ahead that no blob used.
    pub async fn cancel_uploads_ahead(&self) {
        self.open.cancel_sessions_ahead().await;
    }

    /// Whether `repository` (as a reference in it) holds blob `digest`.
    pub async fn has_blob(&self, target: &Reference, digest: &str) -> Result<bool, RegistryError> {
        let exists = if self.is_open(target).await {
            self.open.blob_exists(&self.blob_url(target, digest)).await
        } else {
            self.authenticate(target).await;
            self.client().await.blob_exists(target, digest).await
        };
        exists.map_err(|e| Self::classify(target, e))
    }

    /// The URL of blob `digest` in `reference`'s repository.
    fn blob_url(&self, reference: &Reference, digest: &str) -> String {
        let host = reference.resolve_registry();
        format!(
            "{}://{host}/v2/{}/blobs/{digest}",
            self.scheme(host),
            reference.repository()
        )
    }

    /// Makes blob `digest` of `source` present in `target`'s repository:
    /// nothing if it is there, a cross-repository mount on the same registry,
    /// else a streamed copy (never through memory or disk).
    pub async fn copy_blob(
        &self,
        source: &Reference,
        target: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<Transfer, RegistryError> {
        if self.has_blob(target, digest).await? {
            return Ok(Transfer::Present);
        }
        if source.resolve_registry() == target.resolve_registry() {
            match self.client().await.mount_blob(target, source, digest).await {
                Ok(()) if self.has_blob(target, digest).await? => return Ok(Transfer::Mounted),
                Ok(()) => {}
                Err(error) => tracing::debug!(%error, "mount refused; copying"),
            }
        }
        self.authenticate(source).await;
        let stream = self
            .client()
            .await
            .pull_blob_stream(source, digest)
            .await
            .map_err(|e| Self::classify(source, e))?;
        let body = stream.stream.map_err(OciDistributionError::from);
        self.client()
            .await
            .push_blob_stream(target, body, digest, Some(size))
            .await
            .map_err(|e| Self::classify(target, e))?;
        Ok(Transfer::Copied(size))
    }

    /// Uploads `file` as blob `digest` unless `target` has it (asked first
    /// as `presence` says). Returns the bytes uploaded.
    pub async fn push_blob_file(
        &self,
        target: &Reference,
        digest: &str,
        file: &Path,
        presence: Presence,
    ) -> Result<u64, RegistryError> {
        let io = |e: std::io::Error| RegistryError::Local {
            registry: target.registry().to_owned(),
            message: format!("cannot read {}: {e}", file.display()),
        };
        // Reading a few kilobytes here costs microseconds; through the
        // blocking pool (`tokio::fs`) each step is a thread hand-off.
        let size = std::fs::metadata(file).map_err(io)?.len();
        if size <= UPLOAD_WITHOUT_ASKING {
            let bytes = std::fs::read(file).map_err(io)?;
            return self.push_blob_bytes(target, &bytes, presence).await;
        }
        if self.has_blob(target, digest).await? {
            return Ok(0);
        }
        let reader = tokio::fs::File::open(file).await.map_err(io)?;
        let body = tokio_util_stream(reader);
        self.client()
            .await
            .push_blob_stream(target, body, digest, Some(size))
            .await
            .map_err(|e| Self::classify(target, e))?;
        Ok(size)
    }

    /// Uploads small `bytes` unless `target` has them (asked first as
    /// `presence` says). Returns the bytes uploaded.
    pub async fn push_blob_bytes(
        &self,
        target: &Reference,
        bytes: &[u8],
        presence: Presence,
    ) -> Result<u64, RegistryError> {
        let digest = oci::sha256_digest(bytes);
        if presence.ask_first(bytes.len() as u64) && self.has_blob(target, &digest).await? {
            return Ok(0);
        }
        let pushed = if self.is_open(target).await {
            let uploads = self.blob_url(target, "uploads/");
            let body = Bytes::copy_from_slice(bytes);
            self.open.push_blob(&uploads, body, &digest).await
        } else {
            self.authenticate(target).await;
            self.client()
                .await
                .push_blob(target, bytes.to_vec(), &digest)
                .await
                .map(|_| ())
        };
        pushed.map_err(|e| Self::classify(target, e))?;
        Ok(bytes.len() as u64)
    }

    /// Every tag of `reference`'s repository, following the registry's
    /// pages.
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        const PAGE: usize = 1000;
        let auth = self.authenticated(reference).await;
        let mut tags: Vec<String> = Vec::new();
        loop {
            let page = match self
                .client()
                .await
                .list_tags(
                    reference,
                    &auth,
                    Some(PAGE),
                    tags.last().map(String::as_str),
                )
                .await
            {
                Ok(page) => page.tags,
                // A repository nothing was pushed to yet has no tags.
                Err(error) if Self::is_name_unknown(&error) => Vec::new(),
                Err(error) => return Err(Self::classify(reference, error)),
            };
            let full = page.len() >= PAGE;
            let before = tags.len();
            tags.extend(page);
            if !full || tags.len() == before {
                break;
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Whether `error` says the repository does not exist.
    fn is_name_unknown(error: &OciDistributionError) -> bool {
        match error {
            OciDistributionError::ServerError { code: 404, .. } => true,
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .all(|e| e.code == OciErrorCode::NameUnknown),
            _ => false,
        }
    }

    /// Deletes manifest `digest` from `reference`'s repository (the
    /// distribution API's `DELETE`; every tag pointing at it goes with it).
    /// Credentials go as Basic auth, or, when the registry answers with a
    /// Bearer challenge, as a token asked for with `delete` scope.
    pub async fn delete_manifest(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let host = reference.resolve_registry();
        let url = format!(
            "{}://{host}/v2/{}/manifests/{digest}",
            self.scheme(host),
            reference.repository()
        );
        let refused = |status: reqwest::StatusCode, message: String| RegistryError::Refused {
            registry: host.to_owned(),
            status: Some(status.as_u16()),
            message,
        };
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            registry: host.to_owned(),
            message: e.without_url().to_string(),
        };
        let client = reqwest::Client::new();
        let auth = self.auth_for(host);
        let with_auth = |request: reqwest::RequestBuilder| match &auth {
            RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            RegistryAuth::Bearer(token) => request.bearer_auth(token),
            _ => request,
        };
        let mut response = with_auth(client.delete(&url))
            .send()
            .await
            .map_err(unreachable)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(challenge) = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .and_then(BearerChallenge::parse)
        {
            let scope = format!("repository:{}:delete,pull", reference.repository());
            let token = challenge
                .token(&client, &auth, &scope)
                .await
                .map_err(|refused| RegistryError::Auth {
                    registry: host.to_owned(),
                    message: refused.to_string(),
                })?;
            response = client
                .delete(&url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(unreachable)?;
        }
        match response.status() {
            status if status.is_success() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                Err(RegistryError::Auth {
                    registry: host.to_owned(),
                    message: format!("DELETE of {digest} answered {}", response.status()),
                })
            }
            status @ reqwest::StatusCode::METHOD_NOT_ALLOWED => Err(refused(
                status,
                format!(
                    "the registry refuses deletes (DELETE of {digest} answered 405): enable them \
                 (distribution / docker-registry: storage.delete.enabled: true; Harbor and \
                 Artifactory: a token or user allowed to delete; GHCR and Docker Hub do not \
                 delete through the registry API: use their package settings or API)"
                ),
            )),
            status => Err(refused(
                status,
                format!("DELETE of {digest} answered {status}"),
            )),
        }
    }

    /// Pushes a manifest under `target`'s tag.
    pub async fn push_manifest(
        &self,
        target: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let content_type = media_type.parse().map_err(|_| RegistryError::Invalid {
            registry: target.registry().to_owned(),
            message: format!("invalid media type {media_type}"),
        })?;
        let pushed = if self.is_open(target).await {
            let body = Bytes::copy_from_slice(bytes);
            let url = self.manifest_url(target);
            self.open.push_manifest(&url, body, media_type).await
        } else {
            self.authenticate(target).await;
            self.client()
                .await
                .push_manifest_raw(target, bytes.to_vec(), content_type)
                .await
                .map(|_| ())
        };
        pushed.map_err(|e| Self::classify(target, e))
    }
}

/// `host/repository` of `reference`, as the registry resolves it.
fn repository_of(reference: &Reference) -> String {
    format!(
        "{}/{}",
        reference.resolve_registry(),
        reference.repository()
    )
}

/// A `WWW-Authenticate: Bearer realm=…,service=…` challenge.
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let rest = header.strip_prefix("Bearer ")?;
        let mut realm = None;
        let mut service = None;
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            let value = value.trim_matches('"').to_owned();
            match name {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }

    /// A token for `scope` from the realm, with `auth`'s credentials.
    async fn token(
        &self,
        client: &reqwest::Client,
        auth: &RegistryAuth,
        scope: &str,
    ) -> Result<String, TokenRefused> {
        let mut query = vec![("scope", scope.to_owned())];
        if let Some(service) = &self.service {
            query.push(("service", service.clone()));
        }
        let mut request = client.get(&self.realm).query(&query);
        if let RegistryAuth::Basic(user, password) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(TokenRefused(format!(
                "the token service answered {}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| e.without_url().to_string())?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| TokenRefused("the token service answered no token".to_owned()))
    }
}

/// Why the token service gave no token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TokenRefused(String);

impl From<String> for TokenRefused {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// A file as a stream of chunks for `push_blob_stream`.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static {
    futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 1024 * 1024];
        let read = file
            .read(&mut buffer)
            .await
            .map_err(OciDistributionError::from)?;
        if read == 0 {
            return Ok(None);
        }
        buffer.truncate(read);
        Ok(Some((Bytes::from(buffer), file)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn envelope(codes: Vec<OciErrorCode>) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: codes
                    .into_iter()
                    .map(|code| OciError {
                        code,
                        message: String::new(),
                        detail: Value::Null,
                    })
                    .collect(),
            },
            url: "http://r.io/v2/acme/web/manifests/x".into(),
        }
    }

    #[test]
    fn registry_answers_are_told_apart_by_kind_not_by_text() {
        let reference = parse_reference("r.io/acme/web:main").unwrap();
        let classify = |error| Registry::classify(&reference, error);
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert!(matches!(
            classify(server(404)),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            classify(server(400)),
            RegistryError::Refused {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(classify(server(401)), RegistryError::Auth { .. }));
        assert!(matches!(
            classify(envelope(vec![OciErrorCode::ManifestUnknown])),
            RegistryError::NotFound { .. }
        ));
        // A manifest naming a blob the registry lacks: refused, the case
        // `layer` answers by copying the base's layers and pushing again.
        assert!(matches!(
            classify(envelope(vec![OciErrorCode::ManifestBlobUnknown])),
            RegistryError::Refused { .. }
        ));
        assert!(matches!(
            classify(envelope(vec![OciErrorCode::Denied])),
            RegistryError::Auth { .. }
        ));
        for (error, exit) in [
            (classify(server(404)), Exit::Failed),
            (classify(server(500)), Exit::Failed),
            (
                classify(envelope(vec![OciErrorCode::Unauthorized])),
                Exit::Unreachable,
            ),
        ] {
            assert_eq!(error.exit(), exit, "{error}");
        }
    }

    #[test]
    fn references_parse_like_docker() {
        let r = parse_reference("127.0.0.1:5000/acme/web-base:base-0123").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "acme/web-base", Some("base-0123"))
        );
        let r = parse_reference("busybox").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        let r = parse_reference("library/python:3.12-slim").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "library/python")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("localhost:5000/x@{digest}")).unwrap();
        assert_eq!(
            (r.registry(), r.digest()),
            ("localhost:5000", Some(digest.as_str()))
        );
        assert!(parse_reference("Registry.example.com/UPPER/case").is_err());
        assert!(parse_reference("host.io/x@sha256:zz").is_err());
        assert!(parse_reference("host.io/x:bad tag").is_err());
    }
}
