//! What every protocol shares below HTTP: what is stored ([`catalog`]: the
//! index, trusted as far as the deployment allows), small hot objects in
//! memory ([`hot`]), the memory all uploads may buffer ([`budget`]) and the
//! quota keeper ([`eviction`]), with one error type, [`CacheError`].

pub mod budget;
pub mod catalog;
pub mod eviction;
pub mod hot;

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
