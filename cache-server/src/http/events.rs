//! `/v1/events`: the deploy history `cachectl` reports to (best effort on
//! its side), validated before it is stored.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cache_proto::body::{DeployEvent, EventList};
use serde::Deserialize;

use super::error::ApiError;
use crate::state::AppState;

/// Largest event body.
const MAX_EVENT_BODY: usize = 64 * 1024;
/// Most events one `GET` returns.
const MAX_LIST: usize = 1000;
const KINDS: &[&str] = &["ensure-base", "layer", "build"];

/// Checks what a client sent: known kind, bounded strings, finite
/// non-negative times, a 64-hex key if any.
fn validate(event: &DeployEvent) -> Result<(), ApiError> {
    let bad = |message: &str| Err(ApiError::bad_request("bad_event", message.to_owned()));
    if !KINDS.contains(&event.kind.as_str()) {
        return bad("kind is ensure-base, layer or build");
    }
    if event.image.is_empty()
        || event.image.len() > 512
        || event.image.chars().any(char::is_control)
    {
        return bad("image is 1 to 512 printable characters");
    }
    if event
        .key
        .as_deref()
        .is_some_and(|key| cache_proto::Key::parse(key).is_err())
    {
        return bad("key is 64 lowercase hex characters");
    }
    let digest_ok = |digest: &str| {
        digest.split_once(':').is_some_and(|(algorithm, hex)| {
            (1..=16).contains(&algorithm.len())
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && (32..=128).contains(&hex.len())
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    };
    if event
        .digest
        .as_deref()
        .is_some_and(|digest| !digest_ok(digest))
    {
        return bad("digest is algorithm:hex");
    }
    let time_ok = |seconds: f64| seconds.is_finite() && (0.0..1e7).contains(&seconds);
    if !time_ok(event.seconds)
        || event.phases.len() > 16
        || event
            .phases
            .iter()
            .any(|(name, seconds)| name.len() > 32 || !time_ok(*seconds))
    {
        return bad("times are finite seconds >= 0, at most 16 phases with short names");
    }
    Ok(())
}

/// `POST /v1/events`.
pub async fn add(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_EVENT_BODY)
        .await
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_EVENT_BODY as u64,
        })?;
    let event: DeployEvent = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_event", format!("not a deploy event: {e}")))?;
    validate(&event)?;
    let id = state.events.add(event, state.events_retention).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// How many, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /v1/events`.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    Ok(Json(EventList {
        events: state.events.list(0, limit).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_validated() {
        let good = DeployEvent {
            kind: "build".into(),
            image: "registry/acme/web".into(),
            key: Some("ab".repeat(32)),
            hit: true,
            phases: [("layer".to_owned(), 0.4)].into(),
            seconds: 0.5,
            bytes: 0,
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        };
        assert!(validate(&good).is_ok());
        for broken in [
            DeployEvent {
                kind: "deploy".into(),
                ..good.clone()
            },
            DeployEvent {
                image: String::new(),
                ..good.clone()
            },
            DeployEvent {
                image: "a\nb".into(),
                ..good.clone()
            },
            DeployEvent {
                key: Some("zz".into()),
                ..good.clone()
            },
            DeployEvent {
                seconds: f64::NAN,
                ..good.clone()
            },
            DeployEvent {
                seconds: -1.0,
                ..good.clone()
            },
            DeployEvent {
                digest: Some("sha256:<script>".into()),
                ..good.clone()
            },
        ] {
            assert!(validate(&broken).is_err(), "{broken:?}");
        }
    }
}
