//! The one place where failures become HTTP status codes.
//!
//! Client errors carry a message meant for the client. Server-side failures
//! (storage, index) answer a generic message and are logged here with their
//! detail, so internals never reach a response body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cache_proto::body::{ErrorBody, ErrorDetail};

pub use crate::error::ApiError;

/// The status and stable code of `error`.
fn status_and_code(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
        ApiError::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "digest_mismatch"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ApiError::UnsupportedEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
        }
        ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
        ApiError::StorageUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        ApiError::Conflict(_) => (StatusCode::CONFLICT, "exists"),
        ApiError::InsufficientStorage(_) => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = status_and_code(&self);
        self.log();
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
