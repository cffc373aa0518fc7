//! Gradle HTTP build cache: `GET`/`HEAD`/`PUT /cache/{key}`. Entries are
//! replaced on `PUT`; an oversize entry is 413, which Gradle skips without
//! turning the remote cache off.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, opaque_key, read, write};
use crate::blob::upload::ContentCheck;
use crate::blob::{Space, StoredName};
use crate::http::object::IfExists;
use crate::metrics::Protocol;

fn name(raw: &str) -> Result<StoredName, ApiError> {
    Ok(StoredName::Entry(Space::Gradle, opaque_key(raw)?))
}

/// `GET`/`HEAD /cache/{key}`.
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &name(&raw)?, Protocol::Gradle, &method, &headers).await
}

/// `PUT /cache/{key}`.
pub async fn put(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let how = (ContentCheck::Unverified, IfExists::Replace, None);
    let written = write(&state, &name, Protocol::Gradle, &headers, body, how).await?;
    Ok(written.status().into_response())
}
