//! Nx self-hosted remote cache: `GET`/`PUT /v1/cache/{hash}`. A stored
//! entry is 200 (the only success Nx accepts), an existing one 409.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

use super::{ApiError, AppState, KeyedStore};
use crate::blob::Space;
use crate::http::object::IfExists;
use crate::metrics::Protocol;

const NX: KeyedStore = KeyedStore {
    space: Space::Nx,
    protocol: Protocol::Nx,
    if_exists: IfExists::Refuse,
    stored: Some(StatusCode::OK),
};

/// `GET`/`HEAD /v1/cache/{hash}`.
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    NX.get(&state, &raw, &method, &headers).await
}

/// `PUT /v1/cache/{hash}`.
pub async fn put(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    NX.put(&state, &raw, &headers, body).await
}
