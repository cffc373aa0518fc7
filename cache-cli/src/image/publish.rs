//! Putting a built base image where it belongs, under its tags: a registry
//! repository (blobs checked with HEAD first, base layers mounted or copied,
//! never re-uploaded) or a local OCI layout (base layers fetched once).

use std::path::PathBuf;

use oci_client::Reference;

use super::manifest::{Descriptor, OciDigest};
use super::registry::{Presence, Registry};
use super::{ImageError, ImageTarget, Location, oci};
use crate::report::outcome::PackageLayer;

use crate::invalid::Invalid;

/// The image the new one starts from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Where it lives.
    pub reference: Reference,
    /// Its layers, as its manifest describes them (copied into the new
    /// manifest as they are).
    pub layers: Vec<Descriptor>,
}

/// A layer a build made (or found made before).
#[derive(Debug)]
pub struct NewLayer {
    /// Its digest.
    pub digest: OciDigest,
    /// Its file; `None` when the target already holds the blob (a package
    /// layer an earlier build pushed there).
    pub file: Option<PathBuf>,
}

/// A built image, ready to publish.
#[derive(Debug)]
pub struct NewImage {
    /// The starting image, if any.
    pub base: Option<BaseImage>,
    /// The new layers, bottom first.
    pub layers: Vec<NewLayer>,
    /// With package layers: what each new layer holds.
    pub package_layers: Vec<PackageLayer>,
    /// What the build should say (packages writing one path with different
    /// bytes).
    pub warnings: Vec<String>,
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
            pushed += destination
                .receive_blob(registry, &source, layer.digest.as_str(), layer.size)
                .await?
                .bytes();
        }
    }
    for layer in &image.layers {
        if let Some(file) = &layer.file {
            pushed += destination
                .push_blob_file(registry, layer.digest.as_str(), file, Presence::Unknown)
                .await?;
        }
    }
    pushed += destination
        .push_blob_bytes(registry, &image.config, Presence::Unknown)
        .await?;
    for tag in tags {
        target
            .at(tag)?
            .push_manifest(registry, &image.manifest, &image.media_type)
            .await?;
    }
    Ok(pushed + image.manifest.len() as u64)
}

/// Copies the image `source` names (a manifest, e.g. what buildah exported
/// to a staging layout) to `target` under every tag in `tags`, each blob
/// checked for presence first; returns its digest and the bytes uploaded.
pub async fn copy_image(
    source: &Location,
    target: &ImageTarget,
    registry: &Registry,
    tags: &[&str],
) -> Result<(String, u64), ImageError> {
    let manifest = source.manifest_as_is(registry).await?;
    let invalid = |message: Invalid| {
        ImageError::Layout(super::layout::LayoutError::Invalid {
            path: source.tagged(),
            message: message.to_string(),
        })
    };
    let Some(image) = manifest.image() else {
        return Err(invalid("is an index, not an image".into()));
    };
    let blobs = std::iter::once(&image.config).chain(&image.layers);
    let destination = target.at(tags.first().copied().unwrap_or("latest"))?;
    let mut pushed = 0;
    for blob in blobs {
        pushed += destination
            .receive_blob(registry, source, blob.digest.as_str(), blob.size)
            .await?
            .bytes();
    }
    for tag in tags {
        target
            .at(tag)?
            .push_manifest(registry, &manifest.bytes, &manifest.media_type)
            .await?;
    }
    Ok((
        manifest.digest.to_string(),
        pushed + manifest.bytes.len() as u64,
    ))
}
