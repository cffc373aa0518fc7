//! [`RegistryError`]: what a registry call came to, classified from the
//! registry's answer (its kind, never its text), and the exit it means.

use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::exit::Exit;

/// A registry failure, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable {
        /// host[:port].
        registry: String,
        /// Why.
        message: String,
    },
    /// The registry refused our credentials.
    #[error("registry {registry} refused the credentials: {message}")]
    Auth {
        /// host[:port].
        registry: String,
        /// Why.
        message: String,
    },
    /// What was asked for is not there (a manifest, a tag, a platform).
    #[error("registry {registry}: {message}")]
    NotFound {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
    /// The registry answered and refused the request (a manifest naming
    /// blobs it lacks, deletes disabled, a server error).
    #[error("registry {registry}: {message}")]
    Refused {
        /// host[:port].
        registry: String,
        /// The HTTP status, when the answer had one.
        status: Option<u16>,
        /// What it said.
        message: String,
    },
    /// A reference, media type or answer cachectl cannot use.
    #[error("registry {registry}: {message}")]
    Invalid {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
    /// A local file of the transfer could not be read or written.
    #[error("registry {registry}: {message}")]
    Local {
        /// host[:port].
        registry: String,
        /// What.
        message: String,
    },
}

impl RegistryError {
    /// Unreachable or refusing our credentials: exit 3; anything else: 1.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Unreachable { .. } | Self::Auth { .. } => Exit::Unreachable,
            Self::NotFound { .. }
            | Self::Refused { .. }
            | Self::Invalid { .. }
            | Self::Local { .. } => Exit::Failed,
        }
    }
}

/// The [`RegistryError`] of an `oci-client` failure, by its kind (never
/// its text): unreachable, refused credentials, not found, refused.
pub(super) fn classify(reference: &Reference, error: OciDistributionError) -> RegistryError {
    let registry = reference.registry().to_owned();
    match error {
        OciDistributionError::RequestError(error) if error.is_connect() || error.is_timeout() => {
            RegistryError::Unreachable {
                registry,
                message: error.without_url().to_string(),
            }
        }
        // A 401/403 answered to a blob HEAD or upload arrives as a plain
        // HTTP status error, not as oci-client's own auth variants.
        OciDistributionError::RequestError(error)
            if error.status().is_some_and(|status| {
                status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN
            }) =>
        {
            RegistryError::Auth {
                registry,
                message: error.without_url().to_string(),
            }
        }
        OciDistributionError::AuthenticationFailure(message) => {
            RegistryError::Auth { registry, message }
        }
        OciDistributionError::UnauthorizedError { .. } => RegistryError::Auth {
            registry,
            message: "401 Unauthorized".into(),
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            RegistryError::Auth {
                registry,
                message: envelope.to_string(),
            }
        }
        OciDistributionError::ServerError { code: 401, .. } => RegistryError::Auth {
            registry,
            message: "401 Unauthorized".into(),
        },
        ref error if is_not_found(error) => RegistryError::NotFound {
            registry,
            message: error.to_string(),
        },
        OciDistributionError::ServerError { code, .. } => RegistryError::Refused {
            registry,
            status: Some(code),
            message: error.to_string(),
        },
        OciDistributionError::RequestError(ref request) if request.status().is_some() => {
            RegistryError::Refused {
                registry,
                status: request.status().map(|status| status.as_u16()),
                message: error.to_string(),
            }
        }
        OciDistributionError::RegistryError { .. } => RegistryError::Refused {
            registry,
            status: None,
            message: error.to_string(),
        },
        other => RegistryError::Invalid {
            registry,
            message: other.to_string(),
        },
    }
}

/// Whether `error` says the manifest does not exist.
pub(super) fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_)
        | OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .all(|e| e.code == OciErrorCode::ManifestUnknown),
        _ => false,
    }
}

/// Whether `error` says the repository does not exist.
pub(super) fn is_name_unknown(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .all(|e| e.code == OciErrorCode::NameUnknown),
        _ => false,
    }
}
