//! [`AppState`]: everything a request needs, whatever protocol carried it
//! (the HTTP handlers and the gRPC services share it).

use std::sync::Arc;

use cache_proto::NamespacePattern;

use crate::auth::AuthMode;
use crate::blob::upload::UploadSettings;
use crate::cache::budget::{DEFAULT_UPLOAD_MEMORY, MemoryBudget};
use crate::cache::catalog::{Catalog, IndexTrust};
use crate::cache::eviction::{Evictor, InUse, Remover};
use crate::cache::hot::HotCache;
use crate::cache::key_locks::KeyLocks;
use crate::cache::namespace_quota::NamespaceQuotas;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::namespaces::FallbackChains;
use crate::oidc::Oidc;
use crate::replicated::leases::LeaseBook;
use crate::replicated::{EventLog, TokenStore};
use crate::storage::Storage;

/// Memory for small hot objects (64 MiB).
pub const DEFAULT_HOT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Deploy events kept unless `--events-retention` says otherwise.
pub const DEFAULT_EVENTS_RETENTION: u64 = 10_000;

/// Everything a handler needs, passed explicitly: one shared allocation,
/// so the clone axum makes for every request is one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The bytes.
    pub storage: Storage,
    /// The metadata.
    pub index: Index,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Upload limits.
    pub upload: UploadSettings,
    /// Serialises compare-and-set on action-cache entries.
    pub ac_locks: Arc<KeyLocks>,
    /// How requests are authorised.
    pub auth: AuthMode,
    /// Readers and writers of each object, which eviction leaves alone.
    pub in_use: Arc<InUse>,
    /// The quota keeper, with `--max-size`.
    pub evictor: Option<Evictor>,
    /// How many deploy events are kept.
    pub events_retention: u64,
    /// Small, recently read objects, served from memory.
    pub hot: Arc<HotCache>,
    /// What all uploads together may buffer.
    pub upload_memory: Arc<MemoryBudget>,
    /// What is stored: the index, trusted as far as the deployment allows.
    pub catalog: Catalog,
    /// Where build leases live.
    pub leases: LeaseBook,
    /// Blob GETs larger than this are redirected to the object store.
    pub redirect_reads_over: Option<u64>,
    /// Access tokens.
    pub tokens: Arc<TokenStore>,
    /// The deploy history.
    pub events: Arc<EventLog>,
    /// Where reads of a namespace fall back.
    pub fallbacks: FallbackChains,
    /// The verifier of CI jobs' ID tokens, with `--oidc-config`.
    pub oidc: Option<Arc<Oidc>>,
    /// Quotas per namespace, with `--namespace-quota`.
    pub namespace_quotas: Option<NamespaceQuotas>,
}

impl AppState {
    /// State over the given store and index.
    pub fn new(storage: Storage, index: Index, upload: UploadSettings) -> Self {
        Self(Arc::new(Shared {
            index: index.clone(),
            metrics: Arc::new(Metrics::default()),
            upload,
            ac_locks: Arc::new(KeyLocks::default()),
            auth: AuthMode::Off,
            in_use: Arc::new(InUse::default()),
            evictor: None,
            events_retention: DEFAULT_EVENTS_RETENTION,
            hot: Arc::new(HotCache::new(DEFAULT_HOT_CACHE_BYTES)),
            upload_memory: Arc::new(MemoryBudget::new(
                DEFAULT_UPLOAD_MEMORY,
                storage_upload_bound(&storage),
            )),
            catalog: Catalog::new(storage.clone(), index.clone(), IndexTrust::Authoritative),
            leases: LeaseBook::Index(index.clone()),
            redirect_reads_over: None,
            tokens: Arc::new(TokenStore::index(index.clone())),
            events: Arc::new(EventLog::Index(index.clone())),
            fallbacks: FallbackChains::default(),
            oidc: None,
            namespace_quotas: None,
            storage,
        }))
    }

    /// The same state answering blob GETs above `bytes` with a redirect to
    /// a presigned URL of the object (when the store can presign).
    pub fn with_redirect_reads_over(mut self, bytes: u64) -> Self {
        self.shared_mut().redirect_reads_over = Some(bytes);
        self
    }

    /// The same state keeping tokens and deploy events where `tokens` and
    /// `events` say (the bucket, with replicas).
    pub fn with_shared_state(mut self, tokens: TokenStore, events: EventLog) -> Self {
        let shared = self.shared_mut();
        shared.tokens = Arc::new(tokens);
        shared.events = Arc::new(events);
        self
    }

    /// The same state keeping build leases in `leases`.
    pub fn with_leases(mut self, leases: LeaseBook) -> Self {
        self.shared_mut().leases = leases;
        self
    }

    /// The same state trusting its index as `trust` says.
    pub fn with_index_trust(mut self, trust: IndexTrust) -> Self {
        let catalog = Catalog::new(self.storage.clone(), self.index.clone(), trust);
        self.shared_mut().catalog = catalog;
        self
    }

    /// The same state letting all uploads together buffer `bytes`.
    pub fn with_upload_memory(mut self, bytes: u64) -> Self {
        let bound = storage_upload_bound(&self.storage);
        self.shared_mut().upload_memory = Arc::new(MemoryBudget::new(bytes, bound));
        self
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    /// The same state keeping the store under `quota` bytes.
    pub fn with_quota(mut self, quota: u64) -> Self {
        self.shared_mut().evictor = Some(
            Evictor::new(
                self.storage.clone(),
                self.index.clone(),
                self.in_use.clone(),
                self.metrics.clone(),
                quota,
            )
            .with_hot_cache(self.hot.clone()),
        );
        self
    }

    /// The same state keeping each namespace a rule names under its quota
    /// (the first matching pattern applies).
    pub fn with_namespace_quotas(mut self, rules: Vec<(NamespacePattern, u64)>) -> Self {
        let remover = Remover::new(
            self.storage.clone(),
            self.index.clone(),
            self.in_use.clone(),
            self.metrics.clone(),
        )
        .with_hot_cache(self.hot.clone());
        self.shared_mut().namespace_quotas = Some(NamespaceQuotas::new(rules, remover));
        self
    }

    /// The same state with `evictor` keeping the quota.
    pub fn with_evictor(mut self, evictor: Evictor) -> Self {
        self.shared_mut().evictor = Some(evictor);
        self
    }

    /// The quota, if any.
    pub fn quota(&self) -> Option<u64> {
        self.evictor.as_ref().map(Evictor::quota)
    }

    /// The same state with auth mode `auth`.
    pub fn with_auth(mut self, auth: AuthMode) -> Self {
        self.shared_mut().auth = auth;
        self
    }

    /// The same state accepting the ID tokens `oidc` verifies.
    pub fn with_oidc(mut self, oidc: Oidc) -> Self {
        self.shared_mut().oidc = Some(Arc::new(oidc));
        self
    }

    /// The same state reading namespaces along `fallbacks`.
    pub fn with_fallbacks(mut self, fallbacks: FallbackChains) -> Self {
        self.shared_mut().fallbacks = fallbacks;
        self
    }

    /// The same state keeping `retention` deploy events.
    pub fn with_events_retention(mut self, retention: u64) -> Self {
        self.shared_mut().events_retention = retention;
        self
    }
}

/// The most one upload buffers for `storage`: its parts in flight.
fn storage_upload_bound(storage: &Storage) -> u64 {
    (crate::storage::MAX_PARTS_IN_FLIGHT as u64 + 1) * storage.options().part_size as u64
}
