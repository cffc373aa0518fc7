//! The one place where failures become status codes.
//!
//! Client errors carry a message meant for the client. Server-side failures
//! (storage, index) answer a generic message and are logged here with their
//! detail, so internals never reach a response body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cache_proto::body::{ErrorBody, ErrorDetail};

use crate::blob::download::ReadError;
use crate::blob::upload::UploadError;
use crate::error::CacheError;
use crate::index::IndexError;
use crate::storage::StorageError;

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

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "digest_mismatch"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            Self::StorageUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "exists"),
            Self::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::StorageUnavailable(source) => {
                tracing::warn!(error = %source, "storage unavailable")
            }
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        let (expected, actual) = match &self {
            Self::DigestMismatch { expected, actual } => {
                (Some(expected.clone()), Some(actual.clone()))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                expected,
                actual,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let headers = response.headers_mut();
            for challenge in [
                r#"Bearer realm="cache-server""#,
                r#"Basic realm="cache-server""#,
            ] {
                headers.append(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static(challenge),
                );
            }
        }
        response
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
