//! One new layer on top of a base image: the config that records it and
//! the manifest that lists it after the base's layers. The native builder
//! (a base on its `from` image) and `cachectl layer` (an app on its base)
//! both make their images here, so the two agree on what an image on top
//! of another looks like.

use std::time::{Duration, UNIX_EPOCH};

use super::config::{History, ImageConfig};
use super::manifest::{Descriptor, Manifest, OciDigest, to_bytes};
use super::oci::Flavor;
use crate::pack::layer;

/// The creation time of what cachectl makes: `SOURCE_DATE_EPOCH` or the
/// epoch, so that the same inputs give the same config on any machine.
pub fn created() -> String {
    let time = UNIX_EPOCH + Duration::from_secs(layer::source_date_epoch());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A layer packed to go on top: its blob digest, uncompressed digest,
/// size and media type.
#[derive(Debug, Clone, Copy)]
pub struct TopLayer<'a> {
    /// The blob's digest.
    pub digest: &'a OciDigest,
    /// The uncompressed tar's digest (the config's `diff_ids` entry).
    pub diff_id: &'a str,
    /// The blob's size.
    pub size: u64,
    /// Its media type.
    pub media_type: &'a str,
}

/// A new image's config and manifest, as the bytes to push.
#[derive(Debug, Clone)]
pub struct Composed {
    /// The config blob.
    pub config: Vec<u8>,
    /// The manifest.
    pub manifest: Vec<u8>,
}

impl Composed {
    /// The manifest's digest.
    pub fn digest(&self) -> String {
        super::oci::sha256_digest(&self.manifest)
    }
}

/// The image of `base_layers` then `top`, in the media types of `flavor`:
/// `config` (the base's, with the image's settings already changed) gets
/// the layer's diff id and `step` in its history, and the manifest lists
/// the base's layer descriptors as they are (annotations, `urls` and all).
pub fn compose(
    flavor: Flavor,
    config: ImageConfig,
    base_layers: &[Descriptor],
    top: TopLayer<'_>,
    step: History,
) -> Composed {
    compose_stack(flavor, config, base_layers, vec![(top, step)])
}

/// [`compose`] with several new layers, bottom first, each with the step
/// that made it.
pub fn compose_stack(
    flavor: Flavor,
    mut config: ImageConfig,
    base_layers: &[Descriptor],
    tops: Vec<(TopLayer<'_>, History)>,
) -> Composed {
    let created = created();
    let mut layers = base_layers.to_vec();
    for (top, step) in tops {
        config.push_layer(top.diff_id, &created, step);
        layers.push(Descriptor::new(
            top.media_type,
            top.digest.clone(),
            top.size,
        ));
    }
    let config_bytes = config.to_bytes();
    let manifest = Manifest::new(
        flavor.manifest(),
        Descriptor::new(
            flavor.config(),
            OciDigest::sha256_of(&config_bytes),
            config_bytes.len() as u64,
        ),
        layers,
    );
    Composed {
        // Typed strings and numbers: serialising cannot fail.
        manifest: to_bytes(&manifest).unwrap_or_default(),
        config: config_bytes,
    }
}
