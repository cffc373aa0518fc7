//! Nx self-hosted remote cache: `GET`/`PUT /v1/cache/{hash}`. A stored
//! entry is 200 (the only success Nx accepts), an existing one 409.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, opaque_key, read, write};
use crate::blob::upload::ContentCheck;
use crate::blob::{Space, StoredName};
use crate::http::object::IfExists;
use crate::metrics::Protocol;

fn name(raw: &str) -> Result<StoredName, ApiError> {
    Ok(StoredName::Entry(Space::Nx, opaque_key(raw)?))
}

/// `GET`/`HEAD /v1/cache/{hash}`.
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &name(&raw)?, Protocol::Nx, &method, &headers).await
}

/// `PUT /v1/cache/{hash}`.
pub async fn put(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let how = (ContentCheck::Unverified, IfExists::Refuse, None);
    write(&state, &name, Protocol::Nx, &headers, body, how).await?;
    Ok(StatusCode::OK.into_response())
}
