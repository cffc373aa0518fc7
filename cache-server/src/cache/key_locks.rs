//! Striped locks that make a compare-and-set on one action-cache key atomic
//! within this process.

use cache_proto::Key;
use tokio::sync::{Mutex, MutexGuard};

const LOCK_STRIPES: usize = 64;

/// Striped locks so that a compare-and-set on one key is atomic within this
/// process. Replicas sharing a bucket check preconditions against storage
/// itself and, where the store honours conditional puts, write with one;
/// over a store that ignores them, two replicas' checks and writes can
/// interleave within one storage round trip (see docs/team.md, "Running several replicas").
#[derive(Debug)]
pub struct KeyLocks([Mutex<()>; LOCK_STRIPES]);

impl Default for KeyLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| Mutex::new(())))
    }
}

impl KeyLocks {
    /// Waits for the lock of `key`'s stripe.
    pub async fn lock(&self, key: &Key) -> MutexGuard<'_, ()> {
        self.0[key.as_bytes()[0] as usize % LOCK_STRIPES]
            .lock()
            .await
    }
}
