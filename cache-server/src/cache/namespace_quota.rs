//! Quotas per namespace: `--namespace-quota 'pr-*=1GiB'` gives each
//! namespace the pattern matches its own quota, so one pull request filling
//! its share evicts its own least-recently-used objects and never main's.
//!
//! A namespace is charged for its keyed entries and for the blobs it stored
//! first. A blob that a namespace without a quota stores again, or finds
//! present, is charged to that namespace instead ([`Index::claim_blobs`]),
//! so eviction under a pull request's quota never takes a blob main's
//! entries rely on.
//!
//! [`Index::claim_blobs`]: crate::index::Index::claim_blobs

use std::sync::Arc;

use cache_proto::{Namespace, NamespacePattern};

use super::eviction::Remover;
use crate::error::CacheError;

/// How many candidates are read from the index at a time.
const BATCH: usize = 256;

/// The per-namespace quotas and their keeper. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NamespaceQuotas {
    rules: Arc<Vec<(NamespacePattern, u64)>>,
    remover: Remover,
    pass: Arc<tokio::sync::Mutex<()>>,
}

impl NamespaceQuotas {
    /// Quotas by `rules` (the first matching pattern applies), evicting
    /// with `remover`.
    pub fn new(rules: Vec<(NamespacePattern, u64)>, remover: Remover) -> Self {
        Self {
            rules: Arc::new(rules),
            remover,
            pass: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[(NamespacePattern, u64)] {
        &self.rules
    }

    /// The quota of `namespace`, if a rule names it.
    pub fn quota_of(&self, namespace: &Namespace) -> Option<u64> {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern.matches(namespace))
            .map(|(_, quota)| *quota)
    }

    /// Evicts `namespace`'s least-recently-used objects until it is charged
    /// at most `target` bytes, skipping objects in use; the bytes charged
    /// afterwards.
    pub async fn evict_to(&self, namespace: &Namespace, target: u64) -> Result<u64, CacheError> {
        let _pass = self.pass.lock().await;
        let index = self.remover.index();
        index.flush_access().await?;
        let charged = index.owned_bytes(namespace).await?;
        let charged = self
            .remover
            .evict_down(charged, target, |skip| {
                index.owned_least_recently_used(namespace, skip, BATCH)
            })
            .await?;
        if charged > target {
            tracing::debug!(%namespace, charged, target, "namespace over its quota: objects in use");
        }
        Ok(charged)
    }

    /// Makes room in `namespace` for `incoming` more bytes; `false` when its
    /// quota is smaller, or objects in use leave too little to evict.
    /// Always `true` for a namespace without a quota.
    pub async fn make_room(
        &self,
        namespace: &Namespace,
        incoming: u64,
    ) -> Result<bool, CacheError> {
        let Some(quota) = self.quota_of(namespace) else {
            return Ok(true);
        };
        let Some(target) = quota.checked_sub(incoming) else {
            return Ok(false);
        };
        if self.remover.index().owned_bytes(namespace).await? <= target {
            return Ok(true);
        }
        Ok(self.evict_to(namespace, target).await? <= target)
    }

    /// Brings `namespace` back under its quota (after a write whose size
    /// was not known in advance).
    pub async fn enforce(&self, namespace: &Namespace) -> Result<(), CacheError> {
        if let Some(quota) = self.quota_of(namespace)
            && self.remover.index().owned_bytes(namespace).await? > quota
        {
            self.evict_to(namespace, quota).await?;
        }
        Ok(())
    }
}
