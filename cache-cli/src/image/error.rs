//! [`ImageError`]: why reading or writing an image (in a registry or a
//! layout) failed, and the exit it means.

use super::layout::LayoutError;
use super::registry::RegistryError;
use crate::exit::Exit;

/// Why reading or writing an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The layout could not be read or written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl ImageError {
    /// The exit of a registry failure (see [`RegistryError::exit`]); a
    /// layout's is 1.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Registry(error) => error.exit(),
            Self::Layout(_) => Exit::Failed,
        }
    }
}
