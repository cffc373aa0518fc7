//! What an app image takes from its base: the image manifest (one
//! platform's), its config, and its layers made present at the target;
//! the app layer packed in the media type the base's family allows; and
//! the app image composed on top.

use crate::cli::settings::AppSettings;
use crate::image::Location;
use crate::image::compose::{self, Composed, TopLayer};
use crate::image::config::{History, ImageConfig};
use crate::image::manifest::{Descriptor, Manifest, OciDigest, PulledManifest};
use crate::image::oci::{self, Flavor};
use crate::image::registry::Registry;
use crate::pack::exclude::Excludes;
use crate::pack::layer::{self, Compression, PackOptions};

use super::error::LayerError;
use super::moved::Moved;
use super::settings;

/// The image manifest `pulled` (from `image`), refused when it is an index.
pub(super) fn image_manifest<'a>(
    pulled: &'a PulledManifest,
    image: &Location,
) -> Result<&'a Manifest, LayerError> {
    pulled.image().ok_or_else(|| {
        LayerError::Usage(format!(
            "{}: {} is an index where an image was expected",
            image.tagged(),
            pulled.digest
        ))
    })
}

/// The config of the image `manifest` at `image`.
pub(super) async fn base_config(
    registry: &Registry,
    image: &Location,
    manifest: &Manifest,
) -> Result<ImageConfig, LayerError> {
    let bytes = image
        .small_blob(registry, manifest.config.digest.as_str())
        .await?;
    ImageConfig::parse(&bytes, &image.tagged())
        .map_err(|invalid| LayerError::Usage(invalid.to_string()))
}

/// Makes the base `layers` present at `target` (skipped when there,
/// mounted on the same registry, else copied).
pub(super) async fn copy_base_layers(
    registry: &Registry,
    source: &Location,
    target: &Location,
    layers: &[Descriptor],
    moved: &mut Moved,
) -> Result<(), LayerError> {
    let transfers = futures::future::try_join_all(
        layers
            .iter()
            .map(|layer| target.receive_blob(registry, source, layer.digest.as_str(), layer.size)),
    )
    .await?;
    for transfer in transfers {
        moved.add(transfer);
    }
    Ok(())
}

/// The layer media type for `compression` on a base of `flavor`.
pub(super) fn layer_type(
    compression: Compression,
    flavor: Flavor,
    base: &Location,
) -> Result<&'static str, LayerError> {
    match (compression, flavor) {
        (Compression::Gzip(_), _) => Ok(flavor.gzip_layer()),
        (Compression::Zstd(_), Flavor::Oci) => Ok(oci::OCI_LAYER_ZSTD),
        (Compression::Zstd(_), Flavor::Docker) => Err(LayerError::Usage(format!(
            "{} is a Docker schema-2 image, which has no zstd layer type; use gzip or an OCI base",
            base.tagged()
        ))),
    }
}

/// Packs the context once, in a staging folder that lives as long as the layer.
pub(super) async fn pack_app(
    app: &AppSettings,
) -> Result<(layer::Layer, tempfile::TempDir), LayerError> {
    let pack_error = |source| LayerError::Pack {
        path: app.context.display().to_string(),
        source,
    };
    let excludes = Excludes::for_context(&app.context, &app.exclude)
        .map_err(|e| LayerError::Usage(e.into()))?;
    let staging = tempfile::tempdir().map_err(pack_error)?;
    let (context, staging_path, dest, compression) = (
        app.context.clone(),
        staging.path().to_owned(),
        app.dest.clone(),
        app.compression,
    );
    let packed = tokio::task::spawn_blocking(move || {
        let options = PackOptions {
            compression,
            prefix: dest.trim_start_matches('/'),
            excludes: Some(&excludes),
            ..PackOptions::default()
        };
        layer::pack_with(&context, &staging_path, options)
    })
    .await
    .map_err(|e| pack_error(std::io::Error::other(e)))?
    .map_err(pack_error)?;
    Ok((packed, staging))
}

/// The app layer as it goes on top of a base image: packed once (the same
/// on every platform's image), of one media type, with the app's settings
/// and the base's name for its labels.
pub(super) struct AppLayer<'a> {
    packed: &'a layer::Layer,
    media_type: &'a str,
    app: &'a AppSettings,
    base_name: String,
}

impl<'a> AppLayer<'a> {
    /// `packed` (of `media_type`) with `app`'s settings, on images of `base`.
    pub(super) fn new(
        packed: &'a layer::Layer,
        media_type: &'a str,
        app: &'a AppSettings,
        base: &Location,
    ) -> Self {
        Self {
            packed,
            media_type,
            app,
            base_name: base.label_name(),
        }
    }

    /// The config and manifest of the app image on the base image
    /// `manifest` (digest `base_digest`, config `config`, of `flavor`).
    pub(super) fn on(
        &self,
        base_digest: &str,
        manifest: &Manifest,
        mut config: ImageConfig,
        flavor: Flavor,
    ) -> Composed {
        let step = settings::apply(&mut config, self.app, &self.base_name, base_digest);
        let top = TopLayer {
            digest: &self.packed.digest,
            diff_id: &self.packed.diff_id,
            size: self.packed.size,
            media_type: self.media_type,
        };
        compose::compose(flavor, config, &manifest.layers, top, step)
    }
}

/// The config and manifest of the app image whose app is the stack
/// `layers` (of `media_type`, the full layer first) on the base image
/// `manifest` (digest `base_digest`, config `config`, of `flavor`).
pub(super) fn on_stack(
    app: &AppSettings,
    base: &Location,
    layers: &[super::delta::StackLayer],
    media_type: &str,
    (base_digest, manifest, mut config, flavor): (&str, &Manifest, ImageConfig, Flavor),
) -> Result<Composed, LayerError> {
    let step = settings::apply(&mut config, app, &base.label_name(), base_digest);
    let digests = layers
        .iter()
        .map(|layer| OciDigest::parse(&layer.digest))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|invalid| LayerError::Usage(format!("an app layer record: {invalid}")))?;
    let tops = layers
        .iter()
        .zip(&digests)
        .enumerate()
        .map(|(at, (layer, digest))| {
            let top = TopLayer {
                digest,
                diff_id: &layer.diff_id,
                size: layer.size,
                media_type,
            };
            let history = if at == 0 {
                step.clone()
            } else {
                History {
                    created_by: Some(format!("cachectl layer: changes to {}", app.dest)),
                    ..History::default()
                }
            };
            (top, history)
        })
        .collect();
    Ok(compose::compose_stack(
        flavor,
        config,
        &manifest.layers,
        tops,
    ))
}
