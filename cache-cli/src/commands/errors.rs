//! The errors of `ensure-base`, whose key `hash` and `gc` share: apart, so
//! that those commands import them without importing each other. Each
//! variant decides its exit. (`layer`'s are in [`crate::app_image`].)

use crate::builder::BuildError;
use crate::client::ClientError;
use crate::exit::{Exit, Failure};
use crate::image::ImageError;
use crate::key::KeyError;
use crate::upstream::UpstreamError;

/// Why `ensure-base` failed; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// Inputs or settings are wrong (exit 2).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Settings the run cannot work with (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The build failed (exit 1).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The cache was required and is unreachable (exit 3).
    #[error("cache required but unavailable: {0}")]
    CacheRequired(ClientError),
    /// Publishing or registry lookups failed.
    #[error(transparent)]
    Publish(#[from] ImageError),
    /// An upstream image could not be told or resolved.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl From<EnsureError> for Failure {
    fn from(error: EnsureError) -> Self {
        let code = match &error {
            EnsureError::Key(_) | EnsureError::Usage(_) => Exit::Usage,
            EnsureError::CacheRequired(_) => Exit::Unreachable,
            EnsureError::Build(error) => error.exit(),
            EnsureError::Publish(error) => error.exit(),
            EnsureError::Upstream(error) => error.exit(),
        };
        Self::new(code, error)
    }
}
