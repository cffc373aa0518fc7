//! `cache-server`: a content-addressed HTTP cache.
//!
//! Blobs are named by the BLAKE3 of their content and verified while they
//! stream in; an action cache maps client keys to small values. Bytes live in
//! an `object_store` backend (a local folder by default, or any S3-compatible
//! bucket), stored zstd-compressed when that pays; a SQLite index keeps sizes,
//! hits and access times. See `http` for the API and `storage` for the store.
#![deny(missing_docs)]

pub mod auth;
pub mod blob;
pub mod budget;
pub mod catalog;
pub mod dashboard;
pub mod eviction;
pub mod hot;
pub mod http;
pub mod index;
pub mod leases;
pub mod metrics;
pub mod reindex;
pub mod serve;
pub mod shared;
pub mod storage;
