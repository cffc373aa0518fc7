//! `--platform all` over an image index: the same app layer on every
//! platform's image, each pushed by digest, then a new index under the tag.

use std::time::Instant;

use crate::cli::settings::AppSettings;
use crate::image::Location;
use crate::image::manifest::{Descriptor, Index, OciDigest, PulledManifest, to_bytes};
use crate::image::oci::{self, Flavor};
use crate::image::registry::{Presence, Registry};
use crate::report::outcome::LayerReport;

use super::base::{AppLayer, base_config, copy_base_layers, image_manifest, layer_type, pack_app};
use super::error::LayerError;
use super::moved::{Moved, Timing};

/// Whether an index entry is a platform's image, not an attestation
/// (BuildKit lists its provenance and SBOM manifests in the index, marked
/// `vnd.docker.reference.type`; they describe the base's images, not ours).
fn is_platform_image(entry: &Descriptor) -> bool {
    entry
        .annotations
        .as_ref()
        .is_none_or(|annotations| !annotations.contains_key("vnd.docker.reference.type"))
}

/// Puts the app on every image `index` (at `base`) lists and pushes a new
/// index of the results to `app.image`.
pub(super) async fn layer_index(
    registry: &Registry,
    base: &Location,
    pulled: &PulledManifest,
    index: &Index,
    app: &AppSettings,
    started: Instant,
) -> Result<LayerReport, LayerError> {
    let target = &app.image;
    let index_flavor = if pulled.media_type == oci::DOCKER_LIST {
        Flavor::Docker
    } else {
        Flavor::Oci
    };
    let layer_type = layer_type(app.compression, index_flavor, base)?;
    let layer_started = Instant::now();
    let (packed, _staging) = pack_app(app).await?;
    let layer_seconds = layer_started.elapsed().as_secs_f64();

    let push_started = Instant::now();
    let mut moved = Moved::default();
    moved.add_pushed(
        target
            .push_blob_file(
                registry,
                packed.digest.as_str(),
                packed.file.path(),
                Presence::Unknown,
            )
            .await?,
    );
    let app_layer = AppLayer::new(&packed, layer_type, app, base);
    let mut entries = Vec::new();
    for entry in index
        .manifests
        .iter()
        .filter(|entry| is_platform_image(entry))
    {
        let platform_image = base.at_digest(entry.digest.as_str());
        let pulled = platform_image.manifest_as_is(registry).await?;
        let manifest = image_manifest(&pulled, &platform_image)?;
        let flavor = Flavor::of_manifest(&pulled.media_type);
        let config = base_config(registry, &platform_image, manifest).await?;
        copy_base_layers(
            registry,
            &platform_image,
            target,
            &manifest.layers,
            &mut moved,
        )
        .await?;
        let image = app_layer.on(pulled.digest.as_str(), manifest, config, flavor);
        moved.add_pushed(
            target
                .push_blob_bytes(registry, &image.config, Presence::Unknown)
                .await?,
        );
        let digest = OciDigest::sha256_of(&image.manifest);
        target
            .at_digest(digest.as_str())
            .push_manifest(registry, &image.manifest, flavor.manifest())
            .await?;
        let mut descriptor =
            Descriptor::new(flavor.manifest(), digest, image.manifest.len() as u64);
        descriptor.platform = entry.platform.clone();
        entries.push(descriptor);
    }
    // Typed strings and numbers: serialising cannot fail.
    let index_bytes = to_bytes(&Index::new(&pulled.media_type, entries)).unwrap_or_default();
    target
        .push_manifest(registry, &index_bytes, &pulled.media_type)
        .await?;
    let timing = Timing::pushed(started, layer_seconds, push_started);
    Ok(LayerReport::new(
        target,
        oci::sha256_digest(&index_bytes),
        base,
        (packed.digest.as_str(), packed.size),
        moved,
        timing,
    ))
}
