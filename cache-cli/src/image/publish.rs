//! Putting a built image where it belongs: a registry repository (blobs
//! checked with HEAD first, base layers mounted or copied, never
//! re-uploaded) or a local OCI layout (base layers fetched once).

use std::path::PathBuf;

use oci_client::Reference;
use serde_json::Value;

use super::registry::{Registry, RegistryError, parse_reference};
use super::{ImageTarget, Layout, layout::LayoutError, oci};

/// The image the new one starts from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Where it lives.
    pub reference: Reference,
    /// Its layer descriptors.
    pub layers: Vec<Value>,
}

/// A built image, ready to publish.
#[derive(Debug)]
pub struct NewImage {
    /// The starting image, if any.
    pub base: Option<BaseImage>,
    /// The new layer: file, digest.
    pub layer_file: PathBuf,
    /// Digest of the new layer.
    pub layer_digest: String,
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// Manifest JSON bytes.
    pub manifest: Vec<u8>,
    /// Manifest media type.
    pub media_type: String,
}

impl NewImage {
    /// The manifest digest.
    pub fn digest(&self) -> String {
        oci::sha256_digest(&self.manifest)
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The layout could not be written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

fn tagged(repository: &str, tag: &str) -> Result<Reference, RegistryError> {
    parse_reference(&format!("{repository}:{tag}"))
}

/// The manifest digest `tag` points at in `target`, if any.
pub async fn resolve_tag(
    target: &ImageTarget,
    registry: &Registry,
    tag: &str,
) -> Result<Option<String>, PublishError> {
    match target {
        ImageTarget::Registry(repository) => {
            Ok(registry.resolve(&tagged(repository, tag)?).await?)
        }
        ImageTarget::Layout { dir, .. } => Ok(Layout::new(dir).resolve(tag)?),
    }
}

/// Whether `target` still holds the manifest `digest`.
pub async fn manifest_exists(
    target: &ImageTarget,
    registry: &Registry,
    digest: &str,
) -> Result<bool, PublishError> {
    match target {
        ImageTarget::Registry(repository) => {
            let reference = parse_reference(&format!("{repository}@{digest}"))?;
            Ok(registry.resolve(&reference).await?.is_some())
        }
        ImageTarget::Layout { dir, .. } => Ok(Layout::new(dir).has_blob(digest)),
    }
}

/// Publishes `image` under every tag in `tags`; returns the bytes uploaded.
pub async fn publish(
    target: &ImageTarget,
    registry: &Registry,
    image: &NewImage,
    tags: &[&str],
) -> Result<u64, PublishError> {
    let base_layers = image
        .base
        .iter()
        .flat_map(|base| base.layers.iter().map(move |layer| (base, layer)));
    let mut pushed = 0;
    match target {
        ImageTarget::Registry(repository) => {
            let first = tags.first().copied().unwrap_or("latest");
            let destination = tagged(repository, first)?;
            for (base, layer) in base_layers {
                let digest = layer["digest"].as_str().unwrap_or_default();
                let size = layer["size"].as_u64().unwrap_or(0);
                pushed += registry
                    .copy_blob(&base.reference, &destination, digest, size)
                    .await?
                    .bytes();
            }
            pushed += registry
                .push_blob_file(&destination, &image.layer_digest, &image.layer_file)
                .await?;
            pushed += registry
                .push_blob_bytes(&destination, &image.config)
                .await?;
            for tag in tags {
                let reference = tagged(repository, tag)?;
                registry
                    .push_manifest(&reference, &image.manifest, &image.media_type)
                    .await?;
            }
            pushed += image.manifest.len() as u64;
        }
        ImageTarget::Layout { dir, .. } => {
            let layout = Layout::new(dir);
            for (base, layer) in base_layers {
                let digest = layer["digest"].as_str().unwrap_or_default();
                if layout.has_blob(digest) {
                    continue;
                }
                let staged = layout.staging_file()?;
                registry
                    .pull_blob_to_file(&base.reference, digest, staged.path())
                    .await?;
                layout.put_blob_file(digest, staged.path())?;
            }
            if !layout.has_blob(&image.layer_digest) {
                layout.put_blob_file(&image.layer_digest, &image.layer_file)?;
                pushed += std::fs::metadata(&image.layer_file)
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
            layout.put_blob(&image.config)?;
            layout.put_manifest(&image.manifest, &image.media_type, tags)?;
            pushed += (image.config.len() + image.manifest.len()) as u64;
        }
    }
    Ok(pushed)
}
