//! State that every replica must see: access tokens, deploy events and
//! build leases ([`leases`]).
//!
//! A single server keeps both in its index. Replicas sharing a bucket keep
//! them in the bucket too: tokens as one object per token under `tokens/`
//! (named by the token's hash, never the token), read through a short-lived
//! cache so that a revocation reaches every replica within
//! [`TOKEN_CACHE_FOR`]; deploy events as one object per event under
//! `events/`, written by the replica that received it and merged on read by
//! any replica.

mod events;
pub mod leases;
mod tokens;

pub use events::EventLog;
pub use tokens::{TOKEN_CACHE_FOR, TokenGrant, TokenStore};

/// Locks a mutex whose data stays usable after a panic elsewhere (plain
/// caches, no invariant spans two fields).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
