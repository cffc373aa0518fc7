//! Registry access through `oci-client`: manifests by tag or digest, blobs
//! with a HEAD before every upload (its `push()` re-uploads everything)
//! except small ones the caller has just made (see [`Presence`]); a
//! registry that needs no credentials gets its manifest reads, blob checks,
//! small uploads and manifest pushes from cachectl's own client,
//! cross-repository mounts with a fallback to copying, credentials from flags
//! or the Docker config and its credential helpers. A registry that needs no
//! credentials is spoken to without `oci-client`'s probe before every
//! request (see [`super::open_access`]).

mod auth;
mod error;
mod reference;
mod transfer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest_cache::DigestCache;
use super::known_layers::KnownLayers;
use super::oci::{self, ACCEPTED_MANIFESTS, Platform};
use super::open_access::OpenAccess;
use super::pushed_trees::{PushedTree, PushedTrees};

pub use super::manifest::PulledManifest;
use auth::BearerChallenge;
pub use error::RegistryError;
use error::{classify, is_name_unknown, is_not_found};
use reference::is_loopback;
pub use reference::parse_reference;
pub use transfer::{Presence, RegistrySettings, Transfer, UPLOAD_WITHOUT_ASKING};

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
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(classify(reference, error)),
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
        Self::platform_entry(reference, &pulled, platform).map(Some)
    }

    /// The digest of the image for `platform`: `pulled` itself, or its
    /// entry for `platform` when it is an index.
    fn platform_entry(
        reference: &Reference,
        pulled: &PulledManifest,
        platform: &Platform,
    ) -> Result<String, RegistryError> {
        let Some(index) = pulled.index() else {
            return Ok(pulled.digest.to_string());
        };
        index
            .entry_for(platform)
            .map(|entry| entry.digest.to_string())
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
        if pulled.index().is_some() {
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
                    Err(error) if is_not_found(&error) => return Ok(None),
                    Err(error) => return Err(classify(reference, error)),
                };
                if let Some(cache) = &self.digests {
                    cache.put(&pulled.1, &pulled.0);
                }
                pulled
            }
        };
        PulledManifest::parse(bytes, &digest, &reference.to_string())
            .map(Some)
            .map_err(|invalid| RegistryError::Invalid {
                registry: reference.registry().to_owned(),
                message: invalid.to_string(),
            })
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
            .map_err(|e| classify(reference, e))?;
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
            .map_err(|e| classify(source, e))
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
        exists.map_err(|e| classify(target, e))
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
            .map_err(|e| classify(source, e))?;
        let body = stream.stream.map_err(OciDistributionError::from);
        self.client()
            .await
            .push_blob_stream(target, body, digest, Some(size))
            .await
            .map_err(|e| classify(target, e))?;
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
            .map_err(|e| classify(target, e))?;
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
        pushed.map_err(|e| classify(target, e))?;
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
                Err(error) if is_name_unknown(&error) => Vec::new(),
                Err(error) => return Err(classify(reference, error)),
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
        pushed.map_err(|e| classify(target, e))
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
    use crate::exit::Exit;
    use oci_client::errors::{OciEnvelope, OciError, OciErrorCode};

    fn envelope(codes: Vec<OciErrorCode>) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: codes
                    .into_iter()
                    .map(|code| OciError {
                        code,
                        message: String::new(),
                        detail: serde_json::Value::Null,
                    })
                    .collect(),
            },
            url: "http://r.io/v2/acme/web/manifests/x".into(),
        }
    }

    #[test]
    fn registry_answers_are_told_apart_by_kind_not_by_text() {
        let reference = parse_reference("r.io/acme/web:main").unwrap();
        let classify = |error| classify(&reference, error);
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
