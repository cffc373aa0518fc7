//! The auth middleware (every route, native and compatible, goes through
//! it: [`crate::admission`] over HTTP) and the admin routes that manage
//! tokens over HTTP.
//!
//! Credentials are a bearer token or HTTP Basic with the token as password
//! (ccache and Gradle send Basic; the user name is ignored). The token is
//! hashed and looked up in the index; it is never logged or echoed.

use std::borrow::Cow;

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::endpoint::Endpoint;
use super::error::ApiError;
use super::namespace;
use super::object::{DRAIN_REFUSED_UP_TO, discard};
use crate::admission;
use crate::auth::{expiry, new_token};
use crate::index::Scope;
use crate::namespaces::NamespacePolicy;
use crate::replicated::TokenGrant;
use crate::state::AppState;

/// The secret a request presents, if any (see
/// [`admission::secret_of_authorization`]).
pub(crate) fn presented_secret(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    admission::secret_of_authorization(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Admits a request: checks its credential against the auth mode and the
/// scope its route needs, resolves the namespaces it writes and reads
/// (handlers find them as an `Extension<Namespaces>`), and refuses a write
/// outside what its credential may write. A refused request's body is read
/// (up to a bound, else the connection is closed with `Connection: close`)
/// so that a kept-alive connection stays usable.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    state.metrics.http_request(request.method());
    let named = namespace::named(&request);
    // The router has matched the route already: its template names the
    // endpoint. A request no route matched is matched here (the fallback).
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| Endpoint::of_template(matched.as_str()))
        .unwrap_or_else(|| Endpoint::of(request.uri().path()));
    let needed = endpoint.required_scope(request.method());
    let admitted = match named {
        Ok(named) => {
            admission::admit(&state, named, needed, presented_secret(request.headers())).await
        }
        Err(refusal) => Err(refusal),
    };
    match admitted {
        Ok(namespaces) => {
            request.extensions_mut().insert(namespaces);
            next.run(request).await
        }
        Err(refusal) => refuse(request, refusal).await,
    }
}

/// Answers `refusal`, first reading the request's body to its end when it
/// is modest; a larger (or unending) one is left unread and the connection
/// closed with `Connection: close`, so the client's next request goes on a
/// new connection rather than failing on this one.
async fn refuse(request: Request, refusal: ApiError) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    let drained = match declared {
        Some(0) => true,
        Some(length) if length > DRAIN_REFUSED_UP_TO => false,
        _ => discard(request.into_body(), DRAIN_REFUSED_UP_TO).await,
    };
    let mut response = refusal.into_response();
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    scope: String,
    #[serde(default)]
    name: Option<String>,
    /// e.g. `30d`.
    #[serde(default)]
    expires: Option<String>,
    /// `{"write": [...], "read": [...], "default": "..."}`; absent: every
    /// namespace.
    #[serde(default)]
    namespaces: Option<NamespacePolicy>,
}

/// `POST /v1/tokens`: creates a token and shows its secret, once.
pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::TooLarge { limit: 64 * 1024 })?;
    let request: CreateToken = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!(
                "expected {{\"scope\": \"read|write|admin\", \"name\"?, \"expires\"?, \"namespaces\"?: {{\"write\": [...], \"read\": [...], \"default\"?}}}}: {e}"
            ),
        )
    })?;
    let scope = Scope::parse(&request.scope)
        .ok_or_else(|| ApiError::bad_request("bad_scope", "scope is read, write or admin"))?;
    let expires_ms =
        expiry(request.expires.as_deref()).map_err(|e| ApiError::bad_request("bad_expiry", e))?;
    let token = new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let grant = TokenGrant {
        name: request.name,
        scope,
        expires_ms,
        namespaces: request.namespaces,
    };
    let record = state.tokens.issue(&token, grant).await?;
    let mut value = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    value["token"] = json!(token.secret);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `GET /v1/tokens`: every token, without secrets.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "tokens": state.tokens.list().await? })).into_response())
}

/// `DELETE /v1/tokens/{id}`: revokes by id or name.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.tokens.revoke(id).await? {
        0 => Err(ApiError::NotFound(
            "no active token with that id or name".into(),
        )),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_credentials_are_read() {
        assert_eq!(
            presented_secret(&headers("Bearer abc")).as_deref(),
            Some("abc")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ci:abc");
        assert_eq!(
            presented_secret(&headers(&format!("Basic {basic}"))).as_deref(),
            Some("abc")
        );
        let user_only = base64::engine::general_purpose::STANDARD.encode("abc:");
        assert_eq!(
            presented_secret(&headers(&format!("basic {user_only}"))).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_secret(&headers("Digest x")), None);
        assert_eq!(presented_secret(&HeaderMap::new()), None);
    }
}
