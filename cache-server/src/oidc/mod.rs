//! CI identity instead of shared secrets: a job presents its platform's
//! OIDC ID token (GitHub Actions, GitLab CI) as its bearer token, and the
//! server verifies it (signature against the issuer's published keys,
//! issuer, audience, expiry) and maps its claims to a scope and a
//! namespace policy by the rules of `--oidc-config` ([`config`]), the way
//! trusted publishing works for package registries.
//!
//! A refusal names its reason ([`Refusal`]) to the client and in the log;
//! the token itself is never logged.

pub mod claims;
pub mod config;
pub mod keys;
pub mod rules;
pub mod template;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use self::claims::Claims;
use self::config::{IssuerConfig, OidcConfig};
use self::keys::{KeyError, KeyStore};
use self::rules::{Grant, Rule};

/// The signature algorithms accepted: asymmetric only, so a token can never
/// be signed with a key the server holds (`none` and `HS*` are refused).
const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not three base64url parts with a JSON header and payload.
    #[error("not a well-formed JWT")]
    Malformed,
    /// Its `iss` is not configured.
    #[error("issuer {0:?} is not trusted by this server")]
    UnknownIssuer(String),
    /// The header names no key.
    #[error("the token's header has no key id (kid)")]
    NoKeyId,
    /// A symmetric, unknown or mismatched algorithm.
    #[error("algorithm {0} is not accepted for this key")]
    Algorithm(String),
    /// The issuer's key set has no such key.
    #[error("key id {kid:?} is not among {issuer}'s keys")]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// The issuer's keys could not be had.
    #[error("{issuer}'s keys are unavailable: {source}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// Why.
        source: Arc<KeyError>,
    },
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` is past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is ahead.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` is none of the configured audiences.
    #[error("the token's audience is not one this server accepts")]
    WrongAudience,
    /// Another claim check failed.
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// No rule of the issuer matches its claims.
    #[error("no rule of {issuer} matches the token's claims ({claims})")]
    NoRule {
        /// The issuer.
        issuer: String,
        /// The claims the rules look at.
        claims: String,
    },
    /// The matching rule could not fill its namespaces.
    #[error("rule {rule} of {issuer} matches, but {problem}")]
    Unfilled {
        /// The issuer.
        issuer: String,
        /// 1-based.
        rule: usize,
        /// Why.
        problem: String,
    },
}

impl From<jsonwebtoken::errors::Error> for Refusal {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidIssuer => Self::UnknownIssuer("(mismatch)".into()),
            ErrorKind::InvalidAlgorithm => Self::Algorithm("(mismatch)".into()),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => Self::Malformed,
            ErrorKind::MissingRequiredClaim(claim) => {
                Self::Invalid(format!("the {claim} claim is missing"))
            }
            other => Self::Invalid(format!("{other:?}")),
        }
    }
}

/// One trusted issuer with its keys.
#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    keys: KeyStore,
}

/// The ID-token verifier.
#[derive(Debug)]
pub struct Oidc {
    issuers: Vec<Issuer>,
}

impl Oidc {
    /// A verifier of `config`'s issuers.
    pub fn new(config: OidcConfig) -> Self {
        // Either feature choice of jsonwebtoken needs a provider; ours is
        // aws-lc-rs, as for TLS. A second install is refused, harmlessly.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        let issuers = config
            .issuers
            .into_iter()
            .map(|config| Issuer {
                keys: KeyStore::new(config.keys.clone(), client.clone()),
                config,
            })
            .collect();
        Self { issuers }
    }

    /// The issuers' names, for the startup log.
    pub fn issuer_names(&self) -> Vec<&str> {
        self.issuers
            .iter()
            .map(|issuer| issuer.config.issuer.as_str())
            .collect()
    }

    /// Verifies `token` and returns what its claims are granted.
    pub async fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Malformed)?;
        #[derive(Deserialize)]
        struct Unverified {
            iss: Option<String>,
        }
        // Only to choose the issuer's keys; everything is verified below.
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Refusal::Malformed)?;
        let iss = unverified.iss.unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| issuer.config.issuer == iss)
            .ok_or_else(|| Refusal::UnknownIssuer(shortened(&iss)))?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(Refusal::NoKeyId)?;
        let key = issuer
            .keys
            .key(&kid)
            .await
            .map_err(|source| Refusal::KeysUnavailable {
                issuer: issuer.config.issuer.clone(),
                source,
            })?
            .ok_or_else(|| Refusal::UnknownKey {
                kid: shortened(&kid),
                issuer: issuer.config.issuer.clone(),
            })?;
        let pinned = key.algorithm.is_some_and(|alg| alg != header.alg);
        if pinned || key.key.family() != header.alg.family() {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = issuer.config.leeway_seconds;
        let verified = decode::<Map<String, Value>>(token, &key.key, &validation)?;
        let claims = Claims::new(verified.claims);
        let rules = &issuer.config.rules;
        let (at, rule) = rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(&claims))
            .ok_or_else(|| Refusal::NoRule {
                issuer: issuer.config.issuer.clone(),
                claims: Rule::describe_claims(rules, &claims),
            })?;
        rule.grant(&claims).map_err(|problem| Refusal::Unfilled {
            issuer: issuer.config.issuer.clone(),
            rule: at + 1,
            problem: problem.to_string(),
        })
    }
}

/// Untrusted text for a message: at most 100 characters.
fn shortened(text: &str) -> String {
    text.chars().take(100).collect()
}
