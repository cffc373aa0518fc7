//! Why putting an app on its base failed, and the exit that says so.

use crate::exit::{Exit, Failure};
use crate::image::ImageError;

/// Why `layer` failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Settings or inputs the command cannot use (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The registry or layout failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Packing the layer failed.
    #[error("packing {path}: {source}")]
    Pack {
        /// The context.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<LayerError> for Failure {
    fn from(error: LayerError) -> Self {
        let code = match &error {
            LayerError::Usage(_) => Exit::Usage,
            LayerError::Image(error) => error.exit(),
            LayerError::Pack { .. } => Exit::Failed,
        };
        Self::new(code, error)
    }
}
