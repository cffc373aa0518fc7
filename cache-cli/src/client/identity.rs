//! The CI job's identity: on GitHub Actions, the OIDC ID token the runner
//! issues on request (`ACTIONS_ID_TOKEN_REQUEST_URL` with
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, present when the workflow grants
//! `permissions: id-token: write`), presented to the cache server instead
//! of a long-lived token. GitLab CI puts ID tokens in variables the job
//! names itself (`id_tokens:`), so it needs nothing from here.

use std::time::Duration;

use serde::Deserialize;

/// Why the ID token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("requesting the job's ID token from GitHub Actions: {0}")]
pub struct IdentityError(String);

/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The ID token of this GitHub Actions job for `audience`; `None` when the
/// job offers none (not GitHub Actions, or no `id-token: write`).
pub async fn github_id_token(audience: &str) -> Result<Option<String>, IdentityError> {
    let (Ok(url), Ok(request_token)) = (
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Answer {
        value: String,
    }
    let failed = |e: &dyn std::fmt::Display| IdentityError(e.to_string());
    let response = reqwest::Client::new()
        .get(&url)
        .query(&[("audience", audience)])
        .header(
            reqwest::header::AUTHORIZATION,
            format!("bearer {request_token}"),
        )
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(&e))?;
    if !response.status().is_success() {
        return Err(IdentityError(format!("answered {}", response.status())));
    }
    let answer: Answer = response.json().await.map_err(|e| failed(&e))?;
    Ok(Some(answer.value))
}
