//! The auth middleware (every route, native and compatible, goes through
//! it) and the admin routes that manage tokens over HTTP.
//!
//! Credentials are a bearer token or HTTP Basic with the token as password
//! (ccache and Gradle send Basic; the user name is ignored). The token is
//! hashed and looked up in the index; it is never logged or echoed.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::endpoint::Endpoint;
use super::error::ApiError;
use crate::auth::{AuthMode, expiry, new_token};
use crate::index::{Scope, token_hash};

/// The secret a request presents, if any: `Bearer X`, or Basic with X as
/// the password (or as the user when the password is empty).
fn presented_secret(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let secret = if password.is_empty() { user } else { password };
        return Some(secret.to_owned());
    }
    None
}

/// Checks the request against the auth mode and the scope its route needs.
pub async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let endpoint = Endpoint::of(request.uri().path());
    let Some(needed) = endpoint.required_scope(request.method()) else {
        return Ok(next.run(request).await);
    };
    if state.auth == AuthMode::Off {
        return Ok(next.run(request).await);
    }
    let Some(secret) = presented_secret(request.headers()) else {
        if state.auth == AuthMode::AnonymousRead && needed == Scope::Read {
            return Ok(next.run(request).await);
        }
        return Err(ApiError::Unauthorized(
            "this server needs a token (Authorization: Bearer TOKEN, or Basic with the token as password)".into(),
        ));
    };
    let token = state.tokens.by_hash(token_hash(&secret)).await?;
    let now = crate::index::now_ms();
    let Some(token) = token.filter(|token| token.active_at(now)) else {
        return Err(ApiError::Unauthorized(
            "the token is unknown, expired or revoked".into(),
        ));
    };
    if token.scope < needed {
        return Err(ApiError::Forbidden(format!(
            "token {:?} has scope {}, this request needs {}",
            token.name,
            token.scope.as_str(),
            needed.as_str()
        )));
    }
    Ok(next.run(request).await)
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
}

/// `POST /v1/tokens`: creates a token and shows its secret, once.
pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::TooLarge { limit: 64 * 1024 })?;
    let request: CreateToken = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("expected {{\"scope\": \"read|write|admin\", \"name\"?, \"expires\"?}}: {e}"),
        )
    })?;
    let scope = Scope::parse(&request.scope)
        .ok_or_else(|| ApiError::bad_request("bad_scope", "scope is read, write or admin"))?;
    let expires_ms =
        expiry(request.expires.as_deref()).map_err(|e| ApiError::bad_request("bad_expiry", e))?;
    let token = new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = state
        .tokens
        .issue(&token, request.name, scope, expires_ms)
        .await?;
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
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_credentials_are_read() {
        assert_eq!(presented_secret(&headers("Bearer abc")), Some("abc".into()));
        let basic = base64::engine::general_purpose::STANDARD.encode("ci:abc");
        assert_eq!(
            presented_secret(&headers(&format!("Basic {basic}"))),
            Some("abc".into())
        );
        let user_only = base64::engine::general_purpose::STANDARD.encode("abc:");
        assert_eq!(
            presented_secret(&headers(&format!("basic {user_only}"))),
            Some("abc".into())
        );
        assert_eq!(presented_secret(&headers("Digest x")), None);
        assert_eq!(presented_secret(&HeaderMap::new()), None);
    }
}
