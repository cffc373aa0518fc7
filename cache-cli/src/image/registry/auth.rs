//! The bearer-token exchange of a registry that answers with a
//! `WWW-Authenticate: Bearer` challenge (for deletes, which `oci-client`
//! does not make).

use oci_client::secrets::RegistryAuth;
use serde_json::Value;

/// A `WWW-Authenticate: Bearer realm=…,service=…` challenge.
pub(super) struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

impl BearerChallenge {
    pub(super) fn parse(header: &str) -> Option<Self> {
        let rest = header.strip_prefix("Bearer ")?;
        let mut realm = None;
        let mut service = None;
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            let value = value.trim_matches('"').to_owned();
            match name {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }

    /// A token for `scope` from the realm, with `auth`'s credentials.
    pub(super) async fn token(
        &self,
        client: &reqwest::Client,
        auth: &RegistryAuth,
        scope: &str,
    ) -> Result<String, TokenRefused> {
        let mut query = vec![("scope", scope.to_owned())];
        if let Some(service) = &self.service {
            query.push(("service", service.clone()));
        }
        let mut request = client.get(&self.realm).query(&query);
        if let RegistryAuth::Basic(user, password) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(TokenRefused(format!(
                "the token service answered {}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| e.without_url().to_string())?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| TokenRefused("the token service answered no token".to_owned()))
    }
}

/// Why the token service gave no token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct TokenRefused(String);

impl From<String> for TokenRefused {
    fn from(message: String) -> Self {
        Self(message)
    }
}
