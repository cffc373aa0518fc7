//! `cache-server`: a content-addressed HTTP cache.
//!
//! Blobs are named by the BLAKE3 of their content and verified while they
//! stream in; an action cache maps client keys to small values. Bytes live in
//! an `object_store` backend (a local folder by default, or any S3-compatible
//! bucket), stored zstd-compressed when that pays; a SQLite index keeps sizes,
//! hits and access times.
//!
//! Where things are:
//! - [`config`], [`startup`], [`admin`]: the binary's flags, the state it
//!   serves (one server or replicas) with its background tasks, and the
//!   `token` and `reindex` subcommands;
//! - [`http`]: every route of every protocol ([`http::endpoint`]: one type,
//!   with the scope each needs), one file per operation group;
//! - [`state`]: what every request of every protocol uses;
//! - [`cache`]: catalog, hot objects, upload budget, eviction;
//! - [`error`]: their one error type, also that of `replicated` and `reindex`;
//! - [`admission`], [`namespaces`], [`oidc`]: which namespaces a request
//!   may read and write, and CI jobs' ID tokens as credentials;
//! - [`replicated`]: tokens, deploy events and leases shared through the bucket;
//! - [`blob`], [`index`], [`storage`]: stored format, SQLite, object stores.
#![deny(missing_docs)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod blob;
pub mod cache;
pub mod cli_docs;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod grpc;
pub mod http;
pub mod index;
pub mod metrics;
pub mod namespaces;
pub mod oidc;
pub mod protocol_names;
pub mod reindex;
pub mod replicated;
pub mod serve;
pub mod serve_grpc;
pub mod startup;
pub mod state;
pub mod storage;
