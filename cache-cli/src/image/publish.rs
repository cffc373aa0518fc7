//! Putting a built base image where it belongs, under its tags: a registry
//! repository (blobs checked with HEAD first, base layers mounted or copied,
//! never re-uploaded) or a local OCI layout (base layers fetched once).

use std::path::PathBuf;

use oci_client::Reference;
use serde_json::Value;

use super::registry::Registry;
use super::{ImageError, ImageTarget, Location, oci};

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

/// The manifest digest `tag` points at in `target`, if any.
pub async fn resolve_tag(
    target: &ImageTarget,
    registry: &Registry,
    tag: &str,
) -> Result<Option<String>, ImageError> {
    target.at(tag)?.resolve(registry).await
}

/// Whether `target` still holds the manifest `digest`.
pub async fn manifest_exists(
    target: &ImageTarget,
    registry: &Registry,
    digest: &str,
) -> Result<bool, ImageError> {
    target.at("latest")?.has_manifest(registry, digest).await
}

/// Publishes `image` under every tag in `tags`; returns the bytes uploaded.
pub async fn publish(
    target: &ImageTarget,
    registry: &Registry,
    image: &NewImage,
    tags: &[&str],
) -> Result<u64, ImageError> {
    let destination = target.at(tags.first().copied().unwrap_or("latest"))?;
    let mut pushed = 0;
    if let Some(base) = &image.base {
        let source = Location::Registry(base.reference.clone());
        for layer in &base.layers {
            let digest = layer["digest"].as_str().unwrap_or_default();
            let size = layer["size"].as_u64().unwrap_or(0);
            pushed += destination
                .receive_blob(registry, &source, digest, size)
                .await?
                .bytes();
        }
    }
    pushed += destination
        .push_blob_file(registry, &image.layer_digest, &image.layer_file)
        .await?;
    pushed += destination.push_blob_bytes(registry, &image.config).await?;
    for tag in tags {
        target
            .at(tag)?
            .push_manifest(registry, &image.manifest, &image.media_type)
            .await?;
    }
    Ok(pushed + image.manifest.len() as u64)
}
