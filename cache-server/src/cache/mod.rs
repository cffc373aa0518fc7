//! What every protocol shares below HTTP and gRPC: one object read or
//! written ([`object`]), what is stored ([`catalog`]: the
//! index, trusted as far as the deployment allows), small hot objects in
//! memory ([`hot`]), the memory all uploads may buffer ([`budget`]), the
//! action cache's compare-and-set locks ([`key_locks`]) and the
//! quota keepers ([`eviction`], and [`namespace_quota`] per namespace). Their one error type,
//! [`CacheError`](crate::error::CacheError), lives in `crate::error`, so that `replicated` and `reindex`, which this module
//! uses, can return it without importing this module.

pub mod budget;
pub mod catalog;
pub mod eviction;
pub mod hot;
pub mod key_locks;
pub mod namespace_quota;
pub mod object;
