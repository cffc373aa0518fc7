//! The server's errors, free of any protocol's types:
//!
//! - [`CacheError`]: why the cache's stored state could not be read or
//!   changed. Below `cache`, `replicated` and `reindex`, which all return it.
//! - [`ApiError`]: every way a request can fail, whatever protocol carried
//!   it. `http::error` turns it into a status and a JSON body, `grpc` into a
//!   `Status`; both log a server-side failure's detail ([`ApiError::log`])
//!   and show the client a generic message.

use crate::blob::download::ReadError;
use crate::blob::upload::UploadError;
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
    /// Shared state (a token, an event, a lease) could not be written as
    /// JSON: nothing is stored rather than an empty object.
    #[error("encoding shared state as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// `value` as the JSON bytes of a shared object.
pub fn json_bytes<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, CacheError> {
    Ok(bytes::Bytes::from(serde_json::to_vec(value)?))
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad digest, key, header or body).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// The uploaded content does not hash to the digest in the path.
    #[error("content digest {actual} does not match {expected}")]
    DigestMismatch {
        /// From the path, hex.
        expected: String,
        /// Of the body, hex.
        actual: String,
    },
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is over a size limit.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// `Content-Encoding` other than identity or zstd.
    #[error("unsupported content encoding {0:?} (use zstd or none)")]
    UnsupportedEncoding(String),
    /// A conditional request's precondition is false.
    #[error("{0}")]
    PreconditionFailed(String),
    /// No valid credentials (missing, unknown, expired or revoked token).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials whose scope does not cover the request.
    #[error("{0}")]
    Forbidden(String),
    /// The entry exists and this protocol does not overwrite.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot make room for the object.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The storage did not answer or failed.
    #[error("storage is unavailable")]
    StorageUnavailable(#[source] StorageError),
    /// Anything else on our side.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A [`ApiError::BadRequest`].
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Logs a server-side failure with its detail (the client sees only
    /// [`Display`](std::fmt::Display), which never carries it).
    pub fn log(&self) {
        match self {
            Self::StorageUnavailable(source) => {
                tracing::warn!(error = %source, "storage unavailable")
            }
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound => Self::NotFound("object not found".into()),
            StorageError::Full(source) => {
                tracing::error!(error = %source, "storage is full");
                Self::InsufficientStorage("the cache's storage is full".into())
            }
            other => Self::StorageUnavailable(other),
        }
    }
}

impl From<CacheError> for ApiError {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::Storage(error) => error.into(),
            CacheError::Index(error) => error.into(),
            contended @ CacheError::Contended => Self::Conflict(contended.to_string()),
            encode @ CacheError::Encode(_) => Self::Internal(encode.to_string()),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(error: IndexError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Storage(error) => error.into(),
            ReadError::Format(error) => Self::Internal(error.to_string()),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        match error {
            UploadError::Mismatch { expected, actual } => Self::DigestMismatch { expected, actual },
            UploadError::TooLarge { limit } => Self::TooLarge { limit },
            UploadError::Body(error) => Self::bad_request(
                "bad_body",
                format!("could not read the request body: {error}"),
            ),
            UploadError::Storage(error) => error.into(),
        }
    }
}
