//! Turborepo remote cache (`/v8/artifacts`): status, artifacts by hash with
//! their `x-artifact-duration` and `x-artifact-tag` kept in the index and
//! sent back, the batch query, and events (accepted and dropped). The
//! `teamId` or `slug` query parameter scopes artifacts to a team.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState, opaque_key, read, read_names, write, write_name};
use crate::blob::Space;
use crate::blob::upload::ContentCheck;
use crate::http::object::IfExists;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;

const DURATION: &str = "x-artifact-duration";
const TAG: &str = "x-artifact-tag";
/// Largest batch query body.
const MAX_QUERY_BODY: usize = 1024 * 1024;

/// `teamId` and `slug` query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct TeamQuery {
    #[serde(rename = "teamId")]
    team_id: Option<String>,
    slug: Option<String>,
}

impl TeamQuery {
    fn space(&self) -> Result<Space, ApiError> {
        let team = self
            .team_id
            .as_deref()
            .or(self.slug.as_deref())
            .filter(|team| !team.is_empty())
            .map(opaque_key)
            .transpose()?;
        Ok(Space::Turbo { team })
    }
}

/// What is kept with an artifact.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ArtifactMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

impl ArtifactMeta {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let duration = headers
            .get(DURATION)
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("bad_header", "x-artifact-duration must be a number")
                    })
            })
            .transpose()?;
        let tag = headers
            .get(TAG)
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .filter(|text| text.len() <= 1024)
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("bad_header", "invalid x-artifact-tag"))
            })
            .transpose()?;
        Ok(Self { duration, tag })
    }

    fn parse(meta: Option<&str>) -> Self {
        meta.and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }
}

/// `GET /v8/artifacts/status`.
pub async fn status() -> Json<Value> {
    Json(json!({ "status": "enabled" }))
}

/// `GET`/`HEAD /v8/artifacts/{hash}`: the artifact with its duration and tag.
pub async fn get(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(hash): Path<String>,
    Query(team): Query<TeamQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let names = read_names(&namespaces, &team.space()?, &opaque_key(&hash)?);
    let (mut response, record) = read(&state, &names, Protocol::Turbo, &method, &headers).await?;
    let meta = ArtifactMeta::parse(record.meta.as_deref());
    let out = response.headers_mut();
    if let Some(duration) = meta.duration {
        out.insert(DURATION, HeaderValue::from(duration));
    }
    if let Some(tag) = meta.tag.and_then(|tag| HeaderValue::from_str(&tag).ok()) {
        out.insert(TAG, tag);
    }
    Ok(response)
}

/// `PUT /v8/artifacts/{hash}`: stores (or replaces) the artifact.
pub async fn put(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(hash): Path<String>,
    Query(team): Query<TeamQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = write_name(&namespaces, team.space()?, opaque_key(&hash)?);
    let meta = serde_json::to_string(&ArtifactMeta::from_headers(&headers)?).ok();
    let how = (ContentCheck::Unverified, IfExists::Replace, meta);
    write(
        &state,
        (&name, &namespaces.own),
        Protocol::Turbo,
        &headers,
        body,
        how,
    )
    .await?;
    let url = format!("/v8/artifacts/{hash}");
    Ok((StatusCode::ACCEPTED, Json(json!({ "urls": [url] }))).into_response())
}

/// Body of the batch query.
#[derive(Debug, Deserialize)]
pub struct BatchQuery {
    hashes: Vec<String>,
}

/// `POST /v8/artifacts`: for each hash, its size, duration and tag, or null.
pub async fn query(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Query(team): Query<TeamQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_QUERY_BODY)
        .await
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_QUERY_BODY as u64,
        })?;
    let request: BatchQuery = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("bad_body", format!("expected {{\"hashes\": [...]}}: {e}"))
    })?;
    let space = team.space()?;
    let mut answer = BTreeMap::new();
    for hash in request.hashes {
        let mut found = None;
        for name in read_names(&namespaces, &space, &opaque_key(&hash)?) {
            found = state.index.get(&name).await?;
            if found.is_some() {
                break;
            }
        }
        let value = match found {
            Some(record) => {
                let meta = ArtifactMeta::parse(record.meta.as_deref());
                json!({ "size": record.size, "taskDurationMs": meta.duration, "tag": meta.tag })
            }
            None => Value::Null,
        };
        answer.insert(hash, value);
    }
    Ok(Json(answer).into_response())
}

/// `POST /v8/artifacts/events`: cache usage events, accepted and dropped.
pub async fn events(body: Body) -> Result<Response, ApiError> {
    super::super::object::discard(body, MAX_QUERY_BODY as u64).await;
    Ok(Json(json!({})).into_response())
}
