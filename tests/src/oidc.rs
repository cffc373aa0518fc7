//! A local OIDC issuer, standing in for GitHub Actions' (no real one is
//! reachable here): an RSA signing key, the discovery document and JWKS an
//! issuer publishes, and GitHub's ID-token request endpoint (what a job's
//! `ACTIONS_ID_TOKEN_REQUEST_URL` points at).
//!
//! Tokens are signed here with aws-lc-rs directly, not with the JWT library
//! the server verifies with, so the two cannot share a mistake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An RSA key that signs tokens.
pub struct SigningKey {
    pair: KeyPair,
    /// The key id tokens name in their header.
    pub kid: String,
}

impl SigningKey {
    /// A fresh 2048-bit key.
    pub fn generate(kid: &str) -> Self {
        Self {
            pair: KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
            kid: kid.to_owned(),
        }
    }

    /// Its public half as a JWK.
    pub fn jwk(&self) -> Value {
        let components = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        })
    }

    /// A compact JWS of `claims` under `header` (RS256 signature).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .expect("RSA signature");
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A token of `claims`, signed as an issuer does.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        self.sign_with_header(&header, claims)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[derive(Clone)]
struct Shared {
    url: String,
    jwks: Value,
    key_fetches: Arc<AtomicUsize>,
    request_token: String,
    job_claims: Arc<Mutex<Value>>,
    key: Arc<SigningKey>,
}

/// A running issuer, stopped on drop.
pub struct Issuer {
    /// Its `iss`, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The key its JWKS publishes.
    pub key: Arc<SigningKey>,
    key_fetches: Arc<AtomicUsize>,
    job_claims: Arc<Mutex<Value>>,
    /// What a job presents to the ID-token endpoint
    /// (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
    pub request_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Issuer {
    /// Starts an issuer on a free loopback port.
    pub fn start() -> Self {
        let key = Arc::new(SigningKey::generate("key-1"));
        let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("issuer port");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Shared {
            url: url.clone(),
            jwks: json!({"keys": [key.jwk()]}),
            key_fetches: Arc::new(AtomicUsize::new(0)),
            request_token: format!("request-{}", now()),
            job_claims: Arc::new(Mutex::new(json!({}))),
            key: key.clone(),
        };
        let (shared_fetches, shared_claims, request_token) = (
            shared.key_fetches.clone(),
            shared.job_claims.clone(),
            shared.request_token.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/id-token", get(id_token))
            .with_state(shared);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            url,
            key,
            key_fetches: shared_fetches,
            job_claims: shared_claims,
            request_token,
            shutdown: Some(stop),
            thread: Some(thread),
        }
    }

    /// How many times its JWKS was fetched.
    pub fn key_fetches(&self) -> usize {
        self.key_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a GitHub Actions job, valid for five minutes:
    /// `event` `push` or `pull_request`, `reference` e.g. `refs/heads/main`
    /// or `refs/pull/42/merge`.
    pub fn github_claims(
        &self,
        audience: &str,
        repository: &str,
        event: &str,
        reference: &str,
    ) -> Value {
        let now = now();
        json!({
            "iss": self.url,
            "aud": audience,
            "sub": format!("repo:{repository}:ref:{reference}"),
            "repository": repository,
            "repository_owner": repository.split('/').next().unwrap_or(repository),
            "event_name": event,
            "ref": reference,
            "ref_type": "branch",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// The claims of a GitLab CI job, valid for five minutes, in GitLab's
    /// shapes: every value a string (ids, `ref_protected` "true"/"false"),
    /// `ref` the bare branch name (a merge request's source branch), and no
    /// merge-request number anywhere. `source` is `CI_PIPELINE_SOURCE`:
    /// `push`, `merge_request_event`, `api`, ...
    pub fn gitlab_claims(
        &self,
        audience: &str,
        project_path: &str,
        source: &str,
        branch: &str,
        protected: bool,
    ) -> Value {
        let now = now();
        let namespace_path = project_path
            .rsplit_once('/')
            .map_or(project_path, |(group, _)| group);
        json!({
            "iss": self.url,
            "aud": audience,
            "sub": format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
            "namespace_id": "72",
            "namespace_path": namespace_path,
            "project_id": "20",
            "project_path": project_path,
            "user_id": "1",
            "user_login": "dev",
            "pipeline_id": "574",
            "pipeline_source": source,
            "job_id": "302",
            "ref": branch,
            "ref_type": "branch",
            "ref_path": format!("refs/heads/{branch}"),
            "ref_protected": protected.to_string(),
            "runner_environment": "self-hosted",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// A valid token for `claims`.
    pub fn mint(&self, claims: &Value) -> String {
        self.key.sign(claims)
    }

    /// The claims (all but `aud`, which the job asks for) of the tokens its
    /// ID-token endpoint gives from now on.
    pub fn set_job_claims(&self, claims: Value) {
        *self.job_claims.lock().expect("claims") = claims;
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL` of a job of this issuer.
    pub fn request_url(&self) -> String {
        format!("{}/id-token?api-version=2.0", self.url)
    }

    /// The config stanza of this issuer for `cache-server --oidc-config`
    /// (keys by discovery), without rules.
    pub fn config(&self, audience: &str) -> String {
        format!(
            "[[issuer]]\nurl = \"{}\"\naudience = \"{audience}\"\n",
            self.url
        )
    }

    /// Its JWKS document, for a `jwks_file`.
    pub fn jwks_document(&self) -> String {
        json!({"keys": [self.key.jwk()]}).to_string()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn discovery(State(shared): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/jwks", shared.url),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(shared): State<Shared>) -> Json<Value> {
    shared.key_fetches.fetch_add(1, Ordering::SeqCst);
    Json(shared.jwks.clone())
}

/// GitHub's ID-token request: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=X`
/// with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answered
/// `{"value": JWT}`.
async fn id_token(
    State(shared): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let expected = format!("bearer {}", shared.request_token);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !presented.eq_ignore_ascii_case(&expected) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut claims = shared.job_claims.lock().expect("claims").clone();
    if let Some(audience) = query.get("audience") {
        claims["aud"] = json!(audience);
    }
    Json(json!({"value": shared.key.sign(&claims)})).into_response()
}
