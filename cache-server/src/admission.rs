//! Which namespaces a request may use, whatever protocol carried it: its
//! credential (one of the server's tokens, or a CI job's ID token) checked
//! against the auth mode and the scope it needs, then its own namespace and
//! the ones it reads. The HTTP middleware (`http::auth`) and the gRPC
//! services call [`admit`], the HTTP hot path [`check`]; the secret is
//! never logged or echoed.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use cache_proto::Namespace;

use crate::auth::AuthMode;
use crate::error::ApiError;
use crate::index::{Scope, TokenRecord};
use crate::namespaces::{NamespacePolicy, Namespaces};
use crate::oidc::Oidc;
use crate::state::AppState;

/// The secret an `Authorization` value (an HTTP header, or gRPC
/// `authorization` metadata) presents: `Bearer X` (borrowed), or Basic with
/// X as the password (or as the user when the password is empty).
pub fn secret_of_authorization(value: &str) -> Option<Cow<'_, str>> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Cow::Borrowed(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let secret = if password.is_empty() { user } else { password };
        return Some(Cow::Owned(secret.to_owned()));
    }
    None
}

/// The namespace policy a request is admitted under: borrowed from the
/// token's cached record where it can be, so that admitting a request
/// copies nothing.
enum Policy {
    /// Every namespace.
    Unrestricted,
    /// The token's own.
    Token(Arc<TokenRecord>),
    /// Made for this request (admin tokens, ID tokens).
    Made(NamespacePolicy),
}

impl std::ops::Deref for Policy {
    type Target = NamespacePolicy;

    fn deref(&self) -> &NamespacePolicy {
        match self {
            Self::Token(token) => token.policy(),
            Self::Made(policy) => policy,
            Self::Unrestricted => NamespacePolicy::unrestricted_ref(),
        }
    }
}

/// The namespaces of an admissible request, or why it is refused.
pub async fn admit(
    state: &AppState,
    named: Option<Namespace>,
    needed: Option<Scope>,
    secret: Option<Cow<'_, str>>,
) -> Result<Namespaces, ApiError> {
    let (own, policy) = admitted(state, named, needed, secret).await?;
    Ok(Namespaces::resolve(own, &state.fallbacks, &policy))
}

/// Whether a request is admissible, as [`admit`] decides, without
/// resolving the namespaces it reads (a CAS read, global, needs none).
pub async fn check(
    state: &AppState,
    named: Option<Namespace>,
    needed: Option<Scope>,
    secret: Option<Cow<'_, str>>,
) -> Result<(), ApiError> {
    admitted(state, named, needed, secret).await.map(|_| ())
}

/// The namespace an admissible request uses as its own and the policy of
/// its credential, or why it is refused.
async fn admitted(
    state: &AppState,
    named: Option<Namespace>,
    needed: Option<Scope>,
    secret: Option<Cow<'_, str>>,
) -> Result<(Namespace, Policy), ApiError> {
    let policy = match needed {
        Some(needed) => credential_policy(state, secret, needed).await?,
        None => Policy::Unrestricted,
    };
    let own = named.unwrap_or_else(|| policy.default_namespace());
    match needed {
        Some(Scope::Write) if !policy.may_write(&own) => {
            return Err(ApiError::Forbidden(format!(
                "this token may not write namespace {own} (it may {})",
                policy.describe()
            )));
        }
        Some(Scope::Read) if !policy.may_read(&own) => {
            return Err(ApiError::Forbidden(format!(
                "this token may not read namespace {own} (it may {})",
                policy.describe()
            )));
        }
        _ => {}
    }
    Ok((own, policy))
}

/// The namespace policy of the request's credential, once it is known to
/// hold `needed`: every namespace when auth is off or for anonymous reads.
async fn credential_policy(
    state: &AppState,
    secret: Option<Cow<'_, str>>,
    needed: Scope,
) -> Result<Policy, ApiError> {
    if state.auth == AuthMode::Off {
        return Ok(Policy::Unrestricted);
    }
    let Some(secret) = secret else {
        if state.auth == AuthMode::AnonymousRead && needed == Scope::Read {
            return Ok(Policy::Unrestricted);
        }
        return Err(ApiError::Unauthorized(
            "this server needs a token (Authorization: Bearer TOKEN, or Basic with the token as password)".into(),
        ));
    };
    if let Some(oidc) = &state.oidc
        && cache_proto::credential::is_id_token(&secret)
    {
        return id_token_policy(oidc, &secret, needed)
            .await
            .map(Policy::Made);
    }
    let token = state.tokens.by_secret(&secret).await?;
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
    if token.scope == Scope::Admin {
        // Admin tokens manage the whole server.
        return Ok(Policy::Made(NamespacePolicy {
            default: token
                .namespaces
                .as_ref()
                .and_then(|policy| policy.default.clone()),
            ..NamespacePolicy::unrestricted()
        }));
    }
    Ok(Policy::Token(token))
}

/// The namespace policy of a CI job's ID token, once verified and known to
/// hold `needed`. A refusal's reason goes to the log and to the client; the
/// token itself goes nowhere.
async fn id_token_policy(
    oidc: &Oidc,
    token: &str,
    needed: Scope,
) -> Result<NamespacePolicy, ApiError> {
    let grant = oidc.verify(token).await.map_err(|refusal| {
        tracing::warn!(reason = %refusal, "ID token refused");
        ApiError::Unauthorized(format!("ID token refused: {refusal}"))
    })?;
    if grant.scope < needed {
        return Err(ApiError::Forbidden(format!(
            "this ID token is granted scope {}, this request needs {}",
            grant.scope.as_str(),
            needed.as_str()
        )));
    }
    Ok(grant.policy)
}
