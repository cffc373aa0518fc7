//! Putting a built base image where it belongs, under its tags: a registry
//! repository (blobs checked with HEAD first, base layers mounted or copied,
//! never re-uploaded) or a local OCI layout (base layers fetched once).

use std::path::PathBuf;

use oci_client::Reference;
use serde_json::Value;

use super::registry::{Presence, Registry};
use super::{ImageError, ImageTarget, Location, oci};

use crate::invalid::Invalid;

/// The image the new one starts from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Where it lives.
    pub reference: Reference,
    /// Its layers.
    pub layers: Vec<BaseLayer>,
}

/// A layer of a base image: its descriptor as the base's manifest has it,
/// checked to name a `sha256:` digest and a size.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    /// The layer's digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The whole descriptor (media type, annotations, ...), copied into the
    /// new manifest as it is.
    pub descriptor: Value,
}

impl BaseLayer {
    /// Reads a layer descriptor; a missing or malformed digest or size is
    /// an error, never an empty digest pushed later.
    pub fn parse(descriptor: Value) -> Result<Self, Invalid> {
        let digest = descriptor["digest"]
            .as_str()
            .filter(|digest| oci::sha256_hex(digest).is_some())
            .ok_or_else(|| format!("a layer has no sha256 digest: {descriptor}"))?
            .to_owned();
        let size = descriptor["size"]
            .as_u64()
            .ok_or_else(|| format!("layer {digest} has no size"))?;
        Ok(Self {
            digest,
            size,
            descriptor,
        })
    }
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
            pushed += destination
                .receive_blob(registry, &source, &layer.digest, layer.size)
                .await?
                .bytes();
        }
    }
    pushed += destination
        .push_blob_file(
            registry,
            &image.layer_digest,
            &image.layer_file,
            Presence::Unknown,
        )
        .await?;
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
    if oci::is_index(&manifest.media_type) {
        return Err(invalid("is an index, not an image".into()));
    }
    let blobs = std::iter::once(manifest.json["config"].clone())
        .chain(
            manifest.json["layers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
        .map(BaseLayer::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let destination = target.at(tags.first().copied().unwrap_or("latest"))?;
    let mut pushed = 0;
    for blob in &blobs {
        pushed += destination
            .receive_blob(registry, source, &blob.digest, blob.size)
            .await?
            .bytes();
    }
    for tag in tags {
        target
            .at(tag)?
            .push_manifest(registry, &manifest.bytes, &manifest.media_type)
            .await?;
    }
    Ok((manifest.digest, pushed + manifest.bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_layers_without_a_digest_or_size_are_refused() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let layer = BaseLayer::parse(serde_json::json!({ "digest": digest, "size": 3 })).unwrap();
        assert_eq!((layer.digest.as_str(), layer.size), (digest.as_str(), 3));
        for malformed in [
            serde_json::json!({ "size": 3 }),
            serde_json::json!({ "digest": "", "size": 3 }),
            serde_json::json!({ "digest": "sha256:xyz", "size": 3 }),
            serde_json::json!({ "digest": digest }),
        ] {
            assert!(BaseLayer::parse(malformed.clone()).is_err(), "{malformed}");
        }
    }
}
