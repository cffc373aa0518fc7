//! [`CacheError`]: why the cache's stored state could not be read or
//! changed. Below `cache`, `replicated` and `reindex`, which all return it;
//! `http::error` maps it to a status once.

use crate::index::IndexError;
use crate::storage::StorageError;

/// Why the cache's stored state could not be read or changed: the one
/// error of the catalog, eviction, leases, shared state and `reindex`.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Storage could not be asked, read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Rivals kept replacing a shared object (a lease); try again.
    #[error("the lease kept changing under concurrent askers; try again")]
    Contended,
}
