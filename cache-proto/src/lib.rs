//! The wire contract between `cache-server` and its clients.
//!
//! Everything both sides must agree on lives here and nowhere else: the
//! [`Digest`] and [`Key`] types (64 lowercase hex characters of a BLAKE3
//! hash), the route paths of the native v1 API, its JSON bodies and the header
//! values it uses. The crate does no I/O.
#![deny(missing_docs)]

mod hex;

pub mod batch;
pub mod body;
pub mod credential;
pub mod fold;
pub mod invalid;
pub mod namespace;
pub mod routes;

pub use hex::{Digest, HexError, Key, Sha256};
pub use invalid::Invalid;
pub use namespace::{Namespace, NamespaceError, NamespacePattern, glob_matches};

/// Header values and limits of the native API.
pub mod headers {
    /// The `Content-Encoding` / `Accept-Encoding` token for zstd.
    pub const ZSTD: &str = "zstd";
    /// Uncompressed bytes per zstd frame in storage. A zstd upload made of
    /// independent frames of this size (the last one shorter), each
    /// declaring its size, is stored as sent instead of compressed again.
    pub const ZSTD_FRAME_BYTES: usize = 1024 * 1024;
    /// Largest action-cache value the server accepts, in bytes.
    pub const MAX_AC_VALUE_BYTES: u64 = 1024 * 1024;
    /// Request header of a client that cannot follow a redirect to the
    /// object store (any value): its blob GETs are always served directly.
    pub const NO_REDIRECT: &str = "x-cache-no-redirect";
}
