//! `cachectl layer`: the app folder as one reproducible layer on top of a
//! base image, pushed straight to the registry with no daemon. Base layers
//! are never downloaded: present in the target repository, they are skipped;
//! on the same registry, mounted; elsewhere, stream-copied.

use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use cache_proto::Key;

use super::app_tree::AppTree;
use super::context::{records_for, registry_for};
use super::errors::LayerError;
use crate::cli::config::ConfigFile;
use crate::cli::settings::AppSettings;
use crate::cli::{AppFlags, Cli};
use crate::client::records::RecordStore;
use crate::exit::Failure;
use crate::image::oci::{self, Flavor};
use crate::image::publish::BaseLayer;
use crate::image::registry::{Presence, PulledManifest, Registry, RegistryError, Transfer};
use crate::image::{ImageError, Location, deploys};
use crate::pack::exclude::Excludes;
use crate::pack::layer::{self, Compression, PackOptions};
use crate::report::outcome::LayerReport;
use crate::report::{events, output};

/// The label naming the base key of an image made by `cachectl build`
/// (the same label the native builder puts on the base).
pub use crate::builder::native::KEY_LABEL as BASE_KEY_LABEL;

/// What is remembered about a pushed app image, under its app key, so that
/// an unchanged app is recognised without packing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// Format version.
    pub version: u32,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Manifest body, to tag it again without fetching it.
    pub manifest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Digest of the app layer.
    pub layer_digest: String,
    /// Size of the app layer.
    pub layer_bytes: u64,
}

fn created() -> String {
    let time = UNIX_EPOCH + Duration::from_secs(layer::source_date_epoch());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Merges the app's settings over the base config.
fn app_config(
    mut config: Value,
    app: &AppSettings,
    diff_id: &str,
    base: &str,
    base_digest: &str,
) -> Value {
    let created = created();
    config["created"] = json!(created);
    if !config["rootfs"]["diff_ids"].is_array() {
        config["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
    }
    if let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array_mut() {
        diff_ids.push(json!(diff_id));
    }
    let history = json!({
        "created": created,
        // No host path here: the same inputs give the same image on any machine.
        "created_by": format!("cachectl layer: COPY . {}", app.dest),
    });
    match config["history"].as_array_mut() {
        Some(entries) => entries.push(history),
        None => config["history"] = json!([history]),
    }
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let settings = &mut config["config"];
    if !app.env.is_empty() {
        let mut env: Vec<String> = settings["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .filter(|entry| {
                let name = entry.split('=').next().unwrap_or_default();
                !app.env.contains_key(name)
            })
            .collect();
        env.extend(app.env.iter().map(|(k, v)| format!("{k}={v}")));
        settings["Env"] = json!(env);
    }
    if let Some(workdir) = &app.workdir {
        settings["WorkingDir"] = json!(workdir);
    }
    if let Some(user) = &app.user {
        settings["User"] = json!(user);
    }
    if let Some(entrypoint) = &app.entrypoint {
        settings["Entrypoint"] = json!(entrypoint);
        // As a Dockerfile's ENTRYPOINT does: the base's command was an
        // argument list for the base's entrypoint, not for this one.
        if app.cmd.is_none() {
            settings["Cmd"] = serde_json::Value::Null;
        }
    }
    if let Some(cmd) = &app.cmd {
        settings["Cmd"] = json!(cmd);
    }
    if !settings["Labels"].is_object() {
        settings["Labels"] = json!({});
    }
    for (name, value) in &app.labels {
        settings["Labels"][name] = json!(value);
    }
    settings["Labels"]["org.opencontainers.image.base.digest"] = json!(base_digest);
    settings["Labels"]["org.opencontainers.image.base.name"] = json!(base);
    config
}

/// What moving the blobs of an image cost: bytes uploaded, blobs mounted
/// and blobs the target already had.
#[derive(Debug, Clone, Copy, Default)]
struct Moved {
    uploaded: u64,
    mounted: usize,
    skipped: usize,
}

impl Moved {
    fn add(&mut self, transfer: Transfer) {
        match transfer {
            Transfer::Present => self.skipped += 1,
            Transfer::Mounted => self.mounted += 1,
            Transfer::Copied(bytes) => self.uploaded += bytes,
        }
    }

    fn add_pushed(&mut self, bytes: u64) {
        self.add(if bytes == 0 {
            Transfer::Present
        } else {
            Transfer::Copied(bytes)
        });
    }
}

/// When each phase started and how long packing took.
struct Timing {
    started: Instant,
    layer_seconds: f64,
    push_started: Option<Instant>,
}

impl Timing {
    /// A run that packed for `layer_seconds` and began pushing at
    /// `push_started`.
    fn pushed(started: Instant, layer_seconds: f64, push_started: Instant) -> Self {
        Self {
            started,
            layer_seconds,
            push_started: Some(push_started),
        }
    }
}

impl LayerReport {
    fn new(
        target: &Location,
        digest: String,
        base: &Location,
        layer: (&str, u64),
        moved: Moved,
        timing: Timing,
    ) -> Self {
        Self {
            reused: false,
            image: target.tagged(),
            reference: target.pinned(&digest),
            digest,
            base: base.tagged(),
            layer_digest: layer.0.to_owned(),
            layer_bytes: layer.1,
            uploaded_bytes: moved.uploaded,
            mounted: moved.mounted,
            skipped: moved.skipped,
            layer_seconds: timing.layer_seconds,
            push_seconds: timing
                .push_started
                .map_or(0.0, |push| push.elapsed().as_secs_f64()),
            seconds: timing.started.elapsed().as_secs_f64(),
            deploy_tag: None,
            warnings: Vec::new(),
            manifest: None,
        }
    }
}

/// Makes the base `layers` present at `target` (skipped when there,
/// mounted on the same registry, else copied).
async fn copy_base_layers(
    registry: &Registry,
    source: &Location,
    target: &Location,
    layers: &[Value],
    moved: &mut Moved,
) -> Result<(), LayerError> {
    // A layer without a digest or a size is an error naming the image,
    // never an empty digest asked for.
    let layers = layers
        .iter()
        .map(|layer| {
            BaseLayer::parse(layer.clone()).map_err(|e| {
                LayerError::Usage(format!(
                    "{}: a layer of its manifest is not a descriptor: {e}",
                    source.tagged()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let transfers = futures::future::try_join_all(
        layers
            .iter()
            .map(|layer| target.receive_blob(registry, source, &layer.digest, layer.size)),
    )
    .await?;
    for transfer in transfers {
        moved.add(transfer);
    }
    Ok(())
}

/// The layer media type for `compression` on a base of `flavor`.
fn layer_type(
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
async fn pack_app(app: &AppSettings) -> Result<(layer::Layer, tempfile::TempDir), LayerError> {
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
            keep_owners: false,
        };
        layer::pack_with(&context, &staging_path, options)
    })
    .await
    .map_err(|e| pack_error(std::io::Error::other(e)))?
    .map_err(pack_error)?;
    Ok((packed, staging))
}

/// The config of the image `manifest` at `image`.
async fn base_config(
    registry: &Registry,
    image: &Location,
    manifest: &PulledManifest,
) -> Result<Value, LayerError> {
    let digest = manifest.json["config"]["digest"].as_str().ok_or_else(|| {
        LayerError::Usage(format!(
            "{}: {} has no config",
            image.tagged(),
            manifest.digest
        ))
    })?;
    let bytes = image.small_blob(registry, digest).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        LayerError::Usage(format!(
            "{}: config of {} is not JSON: {e}",
            image.tagged(),
            manifest.digest
        ))
    })
}

/// The manifest's layer descriptors.
fn layers_of(manifest: &PulledManifest) -> &[Value] {
    manifest.json["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `--platform all` over an image index: the same app layer on every
/// platform's image, each pushed by digest, then a new index under the tag.
async fn layer_index(
    registry: &Registry,
    base: &Location,
    index: PulledManifest,
    app: &AppSettings,
    started: Instant,
) -> Result<LayerReport, LayerError> {
    let target = &app.image;
    let index_flavor = if index.media_type == oci::DOCKER_LIST {
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
                &packed.digest,
                packed.file.path(),
                Presence::Unknown,
            )
            .await?,
    );
    let mut entries = Vec::new();
    for entry in index.json["manifests"].as_array().into_iter().flatten() {
        let Some(digest) = entry["digest"].as_str() else {
            continue;
        };
        let platform_image = base.at_digest(digest);
        let image = platform_image.manifest_as_is(registry).await?;
        let flavor = Flavor::of_manifest(&image.media_type);
        let config = base_config(registry, &platform_image, &image).await?;
        copy_base_layers(
            registry,
            &platform_image,
            target,
            layers_of(&image),
            &mut moved,
        )
        .await?;
        let (config_bytes, manifest_bytes) = compose(
            &image,
            config,
            (flavor, layer_type),
            &packed,
            app,
            &base.label_name(),
        );
        moved.add_pushed(
            target
                .push_blob_bytes(registry, &config_bytes, Presence::Unknown)
                .await?,
        );
        let manifest_digest = oci::sha256_digest(&manifest_bytes);
        target
            .at_digest(&manifest_digest)
            .push_manifest(registry, &manifest_bytes, flavor.manifest())
            .await?;
        let mut descriptor = oci::descriptor(
            flavor.manifest(),
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        descriptor["platform"] = entry["platform"].clone();
        entries.push(descriptor);
    }
    let index_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": index.media_type,
        "manifests": entries,
    }))
    .unwrap_or_default();
    target
        .push_manifest(registry, &index_bytes, &index.media_type)
        .await?;
    let timing = Timing::pushed(started, layer_seconds, push_started);
    Ok(LayerReport::new(
        target,
        oci::sha256_digest(&index_bytes),
        base,
        (&packed.digest, packed.size),
        moved,
        timing,
    ))
}

/// The config and manifest of the app image on one base image.
fn compose(
    base_manifest: &PulledManifest,
    base_config: Value,
    (flavor, layer_type): (Flavor, &str),
    packed: &layer::Layer,
    app: &AppSettings,
    base_name: &str,
) -> (Vec<u8>, Vec<u8>) {
    let config = app_config(
        base_config,
        app,
        &packed.diff_id,
        base_name,
        &base_manifest.digest,
    );
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let mut layers = layers_of(base_manifest).to_vec();
    layers.push(oci::descriptor(layer_type, &packed.digest, packed.size));
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": flavor.manifest(),
        "config": oci::descriptor(flavor.config(), &oci::sha256_digest(&config_bytes), config_bytes.len() as u64),
        "layers": layers,
    }))
    .unwrap_or_default();
    (config_bytes, manifest_bytes)
}

/// The identity of the app image: base manifest, every app setting and the
/// tree of the context (its digest from [`context_digest`]).
fn app_key(base_digest: &str, app: &AppSettings, tree_digest: &[u8; 32]) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-app-key/v1\0");
    hasher.update(base_digest.as_bytes());
    hasher.update(b"\0");
    let settings = json!({
        "dest": app.dest,
        "compression": format!("{:?}", app.compression),
        "cmd": app.cmd,
        "entrypoint": app.entrypoint,
        "env": app.env,
        "workdir": app.workdir,
        "user": app.user,
        "labels": app.labels,
        "created": layer::source_date_epoch(),
    });
    hasher.update(&serde_json::to_vec(&settings).unwrap_or_default());
    hasher.update(b"\0");
    hasher.update(tree_digest);
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Tags an identical earlier push again if the target still has it.
async fn reuse(
    registry: &Registry,
    target: &Location,
    record: &AppRecord,
) -> Result<bool, LayerError> {
    if !target
        .has_manifest(registry, &record.manifest_digest)
        .await?
    {
        return Ok(false);
    }
    if target.resolve(registry).await?.as_deref() != Some(record.manifest_digest.as_str()) {
        target
            .push_manifest(registry, record.manifest.as_bytes(), &record.media_type)
            .await?;
    }
    Ok(true)
}

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
        if oci::is_index(&top.media_type) {
            return layer_index(registry, base, top, app, started).await;
        }
    }
    let tree = tree.filter(|_| records.is_some());
    // Sessions for a changed app's blobs open while the base is read.
    let (manifest, ()) = tokio::join!(base.manifest(registry, &app.platform), async {
        if let Some(tree) = tree {
            tree.open_uploads_ahead(registry, app).await;
        }
    });
    let manifest = manifest?;
    let base_image = base.at_digest(&manifest.digest);
    let flavor = Flavor::of_manifest(&manifest.media_type);
    let layer_type = layer_type(app.compression, flavor, base)?;
    let layer_started = Instant::now();
    // The base's config comes, and its layers reach the target (usually
    // already there; not even asked for when an earlier push of an image on
    // this base showed they are), while the context is hashed.
    let mut moved = Moved::default();
    let layers_known = target.layers_known(registry, &manifest.digest);
    let (config, (), tree_digest) = futures::try_join!(
        base_config(registry, &base_image, &manifest),
        async {
            if layers_known {
                moved.skipped += layers_of(&manifest).len();
                return Ok(());
            }
            copy_base_layers(
                registry,
                &base_image,
                target,
                layers_of(&manifest),
                &mut moved,
            )
            .await
        },
        async {
            Ok(match tree {
                Some(tree) => tree.digest().await,
                None => None,
            })
        }
    )?;
    let key = tree_digest.map(|tree| app_key(&manifest.digest, app, &tree));
    let mut warnings = Vec::new();
    if let (Some(records), Some(key)) = (records, key) {
        match records.get::<AppRecord>(&key).await {
            Ok(Some(record)) if reuse(registry, target, &record).await? => {
                if let Some(tree) = &tree_digest {
                    target.note_pushed_tree(registry, tree, record.layer_bytes);
                }
                let moved = Moved {
                    skipped: layers_of(&manifest).len() + 2,
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
    let (packed, _staging) = pack_app(app).await?;
    let layer_seconds = layer_started.elapsed().as_secs_f64();
    // The app layer and the config go up together, then the manifest.
    let push_started = Instant::now();
    let (config_bytes, manifest_bytes) = compose(
        &manifest,
        config,
        (flavor, layer_type),
        &packed,
        app,
        &base.label_name(),
    );
    // An app pushed onto this base from here before (the mark), whose tree
    // the records do not know, has changed: its layer and config are new,
    // and small ones are uploaded without asking. Elsewhere (a fresh
    // runner, no records) they may be there already: asked for first.
    let presence = match (layers_known, &key) {
        (true, Some(_)) => Presence::ProbablyAbsent,
        _ => Presence::Unknown,
    };
    let (layer_sent, config_sent) = futures::try_join!(
        target.push_blob_file(registry, &packed.digest, packed.file.path(), presence),
        target.push_blob_bytes(registry, &config_bytes, presence),
    )?;
    moved.add_pushed(layer_sent);
    moved.add_pushed(config_sent);
    match target
        .push_manifest(registry, &manifest_bytes, flavor.manifest())
        .await
    {
        Ok(()) => {}
        // Pushed without asking for the base's layers, and refused: they
        // may have gone since. Check and copy them, then push once more.
        Err(ImageError::Registry(RegistryError::Refused { message, .. })) if layers_known => {
            tracing::debug!(%message, "manifest refused; checking the base's layers");
            target.set_layers_known(registry, &manifest.digest, false);
            moved.skipped = moved.skipped.saturating_sub(layers_of(&manifest).len());
            copy_base_layers(
                registry,
                &base_image,
                target,
                layers_of(&manifest),
                &mut moved,
            )
            .await?;
            target
                .push_manifest(registry, &manifest_bytes, flavor.manifest())
                .await?;
        }
        Err(error) => return Err(error.into()),
    }
    // The registry took a manifest naming the base's layers: it has them.
    target.set_layers_known(registry, &manifest.digest, true);
    if let Some(tree) = &tree_digest {
        target.note_pushed_tree(registry, tree, packed.size);
    }
    let digest = oci::sha256_digest(&manifest_bytes);
    if let (Some(records), Some(key)) = (records, key) {
        let record = AppRecord {
            version: 1,
            manifest_digest: digest.clone(),
            manifest: String::from_utf8_lossy(&manifest_bytes).into_owned(),
            media_type: flavor.manifest().to_owned(),
            layer_digest: packed.digest.clone(),
            layer_bytes: packed.size,
        };
        if let Err(error) = records.put(&key, &record).await {
            warnings.push(format!("could not record the app image: {error}"));
        }
    }
    let timing = Timing::pushed(started, layer_seconds, push_started);
    let report = LayerReport::new(
        target,
        digest,
        base,
        (&packed.digest, packed.size),
        moved,
        timing,
    );
    Ok(LayerReport {
        manifest: Some((manifest_bytes, flavor.manifest().to_owned())),
        warnings,
        ..report
    })
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

/// `cachectl layer --base REF`: the app on `base`, pushed; prints the
/// app image's reference (or its report).
pub async fn run(cli: &Cli, file: &ConfigFile, base: &str, app: &AppFlags) -> Result<(), Failure> {
    let settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    // Relative layout folders stay relative to the working directory.
    let base = Location::parse(base, Path::new("")).map_err(Failure::usage)?;
    let hosts = [&base, &settings.image]
        .into_iter()
        .filter_map(Location::registry_host)
        .map(str::to_owned);
    let registry = registry_for(cli, hosts);
    let records = records_for(cli, file)?;
    let tree = AppTree::start(&settings)?;
    let report = layer_and_tag(&registry, &records, &base, &settings, &tree).await?;
    // The result first: the history is best effort, after it.
    output::report_layer(&report, cli.json).map_err(Failure::failed)?;
    records.report_event(&events::from_layer(&report)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::Platform;
    use std::collections::BTreeMap;

    #[test]
    fn the_app_config_merges_over_the_base() {
        let base = json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Env": ["PATH=/bin", "MODE=base"], "Cmd": ["/bin/sh"], "Labels": { "team": "infra" } },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:aa"] },
            "history": [{ "created_by": "base" }]
        });
        let app = AppSettings {
            image: Location::parse("r/x", std::path::Path::new(".")).unwrap(),
            context: ".".into(),
            dest: "/app".into(),
            exclude: Vec::new(),
            cmd: Some(vec!["gunicorn".into(), "web.wsgi".into()]),
            entrypoint: None,
            env: BTreeMap::from([("MODE".to_owned(), "app".to_owned())]),
            workdir: Some("/app".into()),
            user: None,
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            platform: Platform::host(),
            compression: Compression::default(),
            all_platforms: false,
            tree_cache: None,
            deploy_tags: true,
        };
        let config = app_config(base, &app, "sha256:bb", "r/base", "sha256:cc");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!(["sha256:aa", "sha256:bb"])
        );
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "MODE=app"]));
        assert_eq!(config["config"]["Cmd"], json!(["gunicorn", "web.wsgi"]));
        assert_eq!(config["config"]["WorkingDir"], "/app");
        assert_eq!(config["config"]["Labels"]["team"], "infra");
        assert_eq!(config["config"]["Labels"]["app"], "web");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.base.digest"],
            "sha256:cc"
        );
        assert_eq!(config["history"].as_array().unwrap().len(), 2);
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");

        // An entrypoint without a command drops the base's command, which
        // would otherwise become the entrypoint's arguments.
        let base = json!({ "config": { "Cmd": ["node"] }, "rootfs": { "diff_ids": [] } });
        let app = AppSettings {
            cmd: None,
            entrypoint: Some(vec!["/usr/local/bin/cache-server".into()]),
            ..app
        };
        let config = app_config(base, &app, "sha256:bb", "r/base", "sha256:cc");
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/usr/local/bin/cache-server"])
        );
        assert!(config["config"]["Cmd"].is_null());
    }
}
