//! [`ImageTarget`]: where a base goes, as configured in `base.image`: a
//! registry repository or a local OCI layout.

use std::path::PathBuf;

use super::error::ImageError;
use super::layout::Layout;
use super::location::{LayoutRef, Location};
use super::registry;

use crate::invalid::Invalid;

/// An image destination as configured in `base.image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageTarget {
    /// A registry repository, e.g. `registry.example.com/acme/web-base`.
    Registry(String),
    /// A local OCI image layout, `oci:DIR[:NAME]`; NAME becomes the moving tag.
    Layout {
        /// The layout folder.
        dir: PathBuf,
        /// Optional name, used as the moving tag.
        name: Option<String>,
    },
}

impl ImageTarget {
    /// Parses `oci:DIR[:NAME]` or a repository without tag or digest.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, name) = match rest.rsplit_once(':') {
                Some((dir, name)) if !name.contains('/') => (dir, Some(name.to_owned())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err("an oci: image needs a folder, e.g. oci:./build/oci".into());
            }
            return Ok(Self::Layout {
                dir: PathBuf::from(dir),
                name,
            });
        }
        let last = text.rsplit('/').next().unwrap_or(text);
        if text.contains('@') || last.contains(':') || text.is_empty() {
            return Err(Invalid(format!(
                "{text:?} must be a repository without tag or digest (cachectl picks the tags)"
            )));
        }
        Ok(Self::Registry(text.to_owned()))
    }

    /// The target as written: also the name its records are kept under,
    /// so two bases named in one layout (`oci:DIR:api-base`,
    /// `oci:DIR:web-base`) each have their own history.
    pub fn describe(&self) -> String {
        match self {
            Self::Registry(repository) => repository.clone(),
            Self::Layout {
                dir,
                name: Some(name),
            } => format!("oci:{}:{name}", dir.display()),
            Self::Layout { dir, name: None } => format!("oci:{}", dir.display()),
        }
    }

    /// The pullable reference of the image with manifest `digest`, pushed
    /// under `tag`.
    pub fn reference(&self, tag: &str, digest: &str) -> String {
        match self {
            Self::Registry(repository) => format!("{repository}@{digest}"),
            Self::Layout { dir, .. } => format!("oci:{}:{tag}", dir.display()),
        }
    }

    /// The image tagged `tag` in this repository or layout.
    pub fn at(&self, tag: &str) -> Result<Location, ImageError> {
        match self {
            Self::Registry(repository) => Ok(Location::Registry(registry::parse_reference(
                &format!("{repository}:{tag}"),
            )?)),
            Self::Layout { dir, .. } => Ok(Location::Layout {
                layout: Layout::new(dir),
                reference: LayoutRef::Name(tag.to_owned()),
            }),
        }
    }

    /// The moving tag configured for this target, if any.
    pub fn moving_tag<'a>(&'a self, configured: Option<&'a str>) -> Option<&'a str> {
        match self {
            Self::Layout {
                name: Some(name), ..
            } => Some(configured.unwrap_or(name)),
            _ => configured,
        }
    }
}
