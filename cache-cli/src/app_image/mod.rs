//! An app image: the app folder as one reproducible layer on top of a base
//! image, pushed straight to the registry or layout with no daemon. Base
//! layers are never downloaded: present in the target repository, they are
//! skipped; on the same registry, mounted; elsewhere, stream-copied. An app
//! identical to an earlier push is recognised by its record and only
//! tagged. `cachectl layer` and `cachectl build` both put their app here.

mod base;
pub mod delta;
pub mod error;
mod index;
mod listing_store;
mod moved;
pub mod record;
pub mod settings;
mod stack;
pub mod tree;

use std::time::Instant;

use crate::cli::settings::AppSettings;
use crate::client::records::RecordStore;
use crate::image::compose::Composed;
use crate::image::manifest::Descriptor;
use crate::image::oci::Flavor;
use crate::image::registry::{Presence, Registry, RegistryError};
use crate::image::{ImageError, Location, deploys};
use crate::report::outcome::{AppLayers, LayerReport};

use base::{AppLayer, base_config, copy_base_layers, image_manifest, layer_type, pack_app};
pub use error::LayerError;
use moved::{Moved, Timing};
use record::{AppRecord, app_key, reuse};
pub use tree::AppTree;

/// The label naming the base key of an image made by `cachectl build`
/// (the same label the native builder puts on the base).
pub use crate::builder::native::KEY_LABEL as BASE_KEY_LABEL;

/// Puts the app on `base` and pushes it to `app.image`. With `records` and
/// the context's `tree`, an app identical to an earlier push (same base,
/// settings and tree) is only checked and tagged, without packing.
pub async fn layer(
    registry: &Registry,
    records: Option<&RecordStore>,
    base: &Location,
    app: &AppSettings,
    tree: Option<&AppTree>,
) -> Result<LayerReport, LayerError> {
    let started = Instant::now();
    let target = &app.image;
    if app.all_platforms {
        let top = base.manifest_as_is(registry).await?;
        if let Some(index) = top.index() {
            return index::layer_index(registry, base, &top, index, app, started).await;
        }
    }
    let tree = tree.filter(|_| records.is_some());
    // Sessions for a changed app's blobs open while the base is read.
    let (manifest, ()) = tokio::join!(base.manifest(registry, &app.platform), async {
        if let Some(tree) = tree {
            tree.open_uploads_ahead(registry, app).await;
        }
    });
    let pulled = manifest?;
    let base_image = base.at_digest(pulled.digest.as_str());
    let manifest = image_manifest(&pulled, &base_image)?;
    let flavor = Flavor::of_manifest(&pulled.media_type);
    let layer_type = layer_type(app.compression, flavor, base)?;
    let layer_started = Instant::now();
    // The base's config comes, and its layers reach the target (usually
    // already there; not even asked for when an earlier push of an image on
    // this base showed they are), while the context is hashed.
    let mut moved = Moved::default();
    let layers_known = target.layers_known(registry, pulled.digest.as_str());
    let (config, (), tree_digest) = futures::try_join!(
        base_config(registry, &base_image, manifest),
        async {
            if layers_known {
                moved.skipped += manifest.layers.len();
                return Ok(());
            }
            copy_base_layers(registry, &base_image, target, &manifest.layers, &mut moved).await
        },
        async {
            Ok(match tree {
                Some(tree) => tree.digest().await,
                None => None,
            })
        }
    )?;
    let key = tree_digest.map(|tree| app_key(pulled.digest.as_str(), app, &tree));
    let mut warnings = Vec::new();
    if let (Some(records), Some(key)) = (records, key) {
        match records.get::<AppRecord>(&key).await {
            Ok(Some(record)) if reuse(registry, target, &record).await? => {
                if let Some(tree) = &tree_digest {
                    target.note_pushed_tree(registry, tree, record.layer_bytes);
                }
                let moved = Moved {
                    skipped: manifest.layers.len() + 2,
                    ..Moved::default()
                };
                let timing = Timing {
                    started,
                    layer_seconds: layer_started.elapsed().as_secs_f64(),
                    push_started: None,
                };
                let layer = (record.layer_digest.as_str(), record.layer_bytes);
                let report = LayerReport::new(
                    target,
                    record.manifest_digest.clone(),
                    base,
                    layer,
                    moved,
                    timing,
                );
                return Ok(LayerReport {
                    reused: true,
                    manifest: Some((record.manifest.into_bytes(), record.media_type)),
                    ..report
                });
            }
            Ok(_) => {}
            Err(error) => warnings.push(format!("{error}; packing the app without the cache")),
        }
    }
    if let (Some(rule), Some(records), Some(key)) = (app.by_change, records, key) {
        let stack_key = stack::stack_key(target, pulled.digest.as_str(), app);
        let presence = if layers_known {
            Presence::ProbablyAbsent
        } else {
            Presence::Unknown
        };
        let on_base = OnBase {
            image: &base_image,
            digest: pulled.digest.as_str(),
            layers: &manifest.layers,
            layers_known,
        };
        // The last deploy's layers are taken to be in the registry without
        // asking (this machine or its cache server recorded pushing them);
        // a manifest refused for want of them is pushed again on one full
        // layer.
        let mut on_last = true;
        let (planned, image, layer_seconds, push_started) = loop {
            let planned =
                stack::plan(registry, records, target, &stack_key, app, rule, on_last).await?;
            let layer_seconds = layer_started.elapsed().as_secs_f64();
            let push_started = Instant::now();
            let image = base::on_stack(
                app,
                base,
                &planned.layers(),
                layer_type,
                (pulled.digest.as_str(), manifest, config.clone(), flavor),
            )?;
            let new_layer = async {
                match &planned.packed {
                    Some((packed, _)) => {
                        target
                            .push_blob_file(
                                registry,
                                packed.digest.as_str(),
                                packed.file.path(),
                                presence,
                            )
                            .await
                    }
                    None => Ok(0),
                }
            };
            let (layer_sent, config_sent) = futures::try_join!(
                new_layer,
                target.push_blob_bytes(registry, &image.config, presence),
            )?;
            moved.add_pushed(layer_sent);
            moved.add_pushed(config_sent);
            match push_manifest(registry, target, &image, flavor, on_base, &mut moved).await {
                Ok(()) => break (planned, image, layer_seconds, push_started),
                Err(LayerError::Image(ImageError::Registry(RegistryError::Refused {
                    message,
                    ..
                }))) if on_last && !planned.kept.is_empty() => {
                    tracing::debug!(%message, "the last deploy's layers are gone: one full layer");
                    on_last = false;
                }
                Err(error) => return Err(error),
            }
        };
        moved.skipped += planned.kept.len();
        stack::remember(records, app, &stack_key, &planned).await;
        let layers = planned.layers();
        // The top layer is the one the report and the app record name.
        let layer = layers
            .last()
            .map_or(("", 0), |top| (top.digest.as_str(), top.size));
        if let Some(tree) = &tree_digest {
            let last_push = planned.packed.as_ref().map_or(0, |(packed, _)| packed.size);
            target.note_pushed_tree(registry, tree, last_push);
        }
        let digest = image.digest();
        if let Err(warning) = record_app(records, &key, &digest, &image, flavor, layer).await {
            warnings.push(warning);
        }
        let timing = Timing::pushed(started, layer_seconds, push_started);
        let report = LayerReport::new(target, digest, base, layer, moved, timing);
        return Ok(LayerReport {
            manifest: Some((image.manifest, flavor.manifest().to_owned())),
            app_layers: Some(AppLayers {
                layers: layers.len(),
                pushed: usize::from(planned.packed.is_some()),
                delta_files: planned.delta.map(|(files, _)| files),
                delta_bytes: planned.delta.map(|(_, bytes)| bytes),
                compacted: planned.compacted.is_some(),
                compaction: planned.compacted.map(stack::Compacted::name),
            }),
            warnings,
            ..report
        });
    }
    let (packed, _staging) = pack_app(app).await?;
    let layer_seconds = layer_started.elapsed().as_secs_f64();
    // The app layer and the config go up together, then the manifest.
    let push_started = Instant::now();
    let app_layer = AppLayer::new(&packed, layer_type, app, base);
    let image = app_layer.on(pulled.digest.as_str(), manifest, config, flavor);
    // An app pushed onto this base from here before (the mark), whose tree
    // the records do not know, has changed: its layer and config are new,
    // and small ones are uploaded without asking. Elsewhere (a fresh
    // runner, no records) they may be there already: asked for first.
    let presence = match (layers_known, &key) {
        (true, Some(_)) => Presence::ProbablyAbsent,
        _ => Presence::Unknown,
    };
    let (layer_sent, config_sent) = futures::try_join!(
        target.push_blob_file(
            registry,
            packed.digest.as_str(),
            packed.file.path(),
            presence
        ),
        target.push_blob_bytes(registry, &image.config, presence),
    )?;
    moved.add_pushed(layer_sent);
    moved.add_pushed(config_sent);
    let on_base = OnBase {
        image: &base_image,
        digest: pulled.digest.as_str(),
        layers: &manifest.layers,
        layers_known,
    };
    push_manifest(registry, target, &image, flavor, on_base, &mut moved).await?;
    if let Some(tree) = &tree_digest {
        target.note_pushed_tree(registry, tree, packed.size);
    }
    let digest = image.digest();
    if let (Some(records), Some(key)) = (records, key) {
        let layer = (packed.digest.as_str(), packed.size);
        if let Err(warning) = record_app(records, &key, &digest, &image, flavor, layer).await {
            warnings.push(warning);
        }
    }
    let timing = Timing::pushed(started, layer_seconds, push_started);
    let report = LayerReport::new(
        target,
        digest,
        base,
        (packed.digest.as_str(), packed.size),
        moved,
        timing,
    );
    Ok(LayerReport {
        manifest: Some((image.manifest, flavor.manifest().to_owned())),
        warnings,
        ..report
    })
}

/// The base an app image is put on, as its manifest push needs it.
#[derive(Clone, Copy)]
struct OnBase<'a> {
    /// The base image, at its digest.
    image: &'a Location,
    /// Its manifest digest.
    digest: &'a str,
    /// Its layers.
    layers: &'a [Descriptor],
    /// Whether they were taken to be at the target without asking.
    layers_known: bool,
}

/// Pushes `image`'s manifest to `target`. Pushed without asking for the
/// base's layers, and refused, they may have gone since: they are checked
/// and copied, and the manifest pushed once more. The registry then has
/// them (marked known).
async fn push_manifest(
    registry: &Registry,
    target: &Location,
    image: &Composed,
    flavor: Flavor,
    base: OnBase<'_>,
    moved: &mut Moved,
) -> Result<(), LayerError> {
    match target
        .push_manifest(registry, &image.manifest, flavor.manifest())
        .await
    {
        Ok(()) => {}
        Err(ImageError::Registry(RegistryError::Refused { message, .. })) if base.layers_known => {
            tracing::debug!(%message, "manifest refused; checking the base's layers");
            target.set_layers_known(registry, base.digest, false);
            moved.skipped = moved.skipped.saturating_sub(base.layers.len());
            copy_base_layers(registry, base.image, target, base.layers, moved).await?;
            target
                .push_manifest(registry, &image.manifest, flavor.manifest())
                .await?;
        }
        Err(error) => return Err(error.into()),
    }
    target.set_layers_known(registry, base.digest, true);
    Ok(())
}

/// Records the app image `image` (manifest `digest`, top layer `layer`)
/// under `key`; a warning when the records cannot be written.
async fn record_app(
    records: &RecordStore,
    key: &cache_proto::Key,
    digest: &str,
    image: &Composed,
    flavor: Flavor,
    layer: (&str, u64),
) -> Result<(), String> {
    let record = AppRecord {
        version: 1,
        manifest_digest: digest.to_owned(),
        manifest: String::from_utf8_lossy(&image.manifest).into_owned(),
        media_type: flavor.manifest().to_owned(),
        layer_digest: layer.0.to_owned(),
        layer_bytes: layer.1,
    };
    records
        .put(key, &record)
        .await
        .map_err(|error| format!("could not record the app image: {error}"))
}

/// [`layer`], then [`tag_deploy`]; the upload sessions opened ahead and
/// not used are cancelled either way.
pub async fn layer_and_tag(
    registry: &Registry,
    records: &RecordStore,
    base: &Location,
    app: &AppSettings,
    tree: &AppTree,
) -> Result<LayerReport, LayerError> {
    let mut report = match layer(registry, Some(records), base, app, Some(tree)).await {
        Ok(report) => report,
        Err(error) => {
            registry.cancel_uploads_ahead().await;
            return Err(error);
        }
    };
    tokio::join!(
        tag_deploy(registry, app, &mut report),
        registry.cancel_uploads_ahead()
    );
    Ok(report)
}

/// Tags the pushed app image `TAG.deploy-TIME` too (unless `deploy_tags =
/// false`). The deploy has happened: a failure here is a warning.
pub async fn tag_deploy(registry: &Registry, app: &AppSettings, report: &mut LayerReport) {
    if !app.deploy_tags {
        return;
    }
    let known = report
        .manifest
        .as_ref()
        .map(|(bytes, media_type)| (bytes.as_slice(), media_type.as_str()));
    match deploys::tag_deploy(registry, &app.image, &report.digest, known).await {
        Ok(tag) => report.deploy_tag = tag.map(|deploy| deploy.tag),
        Err(error) => report
            .warnings
            .push(format!("could not add the deploy tag: {error}")),
    }
}
