//! `/v1/leases/{key}`: build leases, so that of N CI jobs missing the same
//! key one builds and the others wait for its result.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cache_proto::Key;
use cache_proto::body::LeaseRequest;

use super::error::ApiError;
use super::request;
use crate::index::LeaseOutcome;
use crate::namespaces::Namespaces;
use crate::state::AppState;

/// Longest lease, in seconds; a builder renews before it lapses.
const MAX_TTL_SECONDS: u64 = 3600;
/// Longest holder identifier.
const MAX_HOLDER_LEN: usize = 256;

/// The lease's name: the key in the request's own namespace (a lease held
/// in one namespace never makes another wait). In `default` it is the key
/// alone, as before namespaces.
fn lease_name(namespaces: &Namespaces, key: &Key) -> String {
    if namespaces.own.is_default() {
        key.to_string()
    } else {
        format!("{}.{key}", namespaces.own)
    }
}

fn holder(text: &str) -> Result<String, ApiError> {
    if text.is_empty() || text.len() > MAX_HOLDER_LEN || text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_holder",
            format!("holder must be 1 to {MAX_HOLDER_LEN} printable characters"),
        ));
    }
    Ok(text.to_owned())
}

fn answer(outcome: LeaseOutcome) -> Response {
    match outcome {
        LeaseOutcome::Granted(lease) => (StatusCode::CREATED, Json(lease)).into_response(),
        LeaseOutcome::Held(lease) => (StatusCode::CONFLICT, Json(lease)).into_response(),
        LeaseOutcome::Released => StatusCode::NO_CONTENT.into_response(),
        LeaseOutcome::Free => ApiError::NotFound("no lease is held".into()).into_response(),
    }
}

/// `POST /v1/leases/{key}` with `{"holder": "...", "ttl_seconds": N}`:
/// `201` granted or renewed, `409` held by another (body says who, until when).
pub async fn acquire(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    let bytes: Bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::TooLarge { limit: 64 * 1024 })?;
    let lease: LeaseRequest = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"holder\": \"...\", \"ttl_seconds\": N}}: {error}"),
        )
    })?;
    let holder = holder(&lease.holder)?;
    if lease.ttl_seconds == 0 || lease.ttl_seconds > MAX_TTL_SECONDS {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_seconds must be 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    let ttl_ms = (lease.ttl_seconds * 1000) as i64;
    Ok(answer(
        state
            .leases
            .acquire(&lease_name(&namespaces, &key), &holder, ttl_ms)
            .await?,
    ))
}

/// `DELETE /v1/leases/{key}?holder=...`: `204` released, `409` held by
/// another, `404` free.
pub async fn release(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    let named = query.as_deref().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "holder")
            .map(|(_, value)| value.into_owned())
    });
    let Some(named) = named else {
        return Err(ApiError::bad_request(
            "invalid_holder",
            "?holder= is required",
        ));
    };
    let holder = holder(&named)?;
    Ok(answer(
        state
            .leases
            .release(&lease_name(&namespaces, &key), &holder)
            .await?,
    ))
}
