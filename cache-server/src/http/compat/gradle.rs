//! Gradle HTTP build cache: `GET`/`HEAD`/`PUT /cache/{key}`. Entries are
//! replaced on `PUT`; an oversize entry is 413, which Gradle skips without
//! turning the remote cache off.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::{ApiError, AppState, KeyedStore};
use crate::blob::Space;
use crate::http::object::IfExists;
use crate::metrics::Protocol;

const GRADLE: KeyedStore = KeyedStore {
    space: Space::Gradle,
    protocol: Protocol::Gradle,
    if_exists: IfExists::Replace,
    stored: None,
};

/// `GET`/`HEAD /cache/{key}`.
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    GRADLE.get(&state, &raw, &method, &headers).await
}

/// `PUT /cache/{key}`.
pub async fn put(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    GRADLE.put(&state, &raw, &headers, body).await
}
