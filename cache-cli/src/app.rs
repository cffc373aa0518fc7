//! `cachectl layer`: the app folder as one reproducible layer on top of a
//! base image, pushed straight to the registry with no daemon. Base layers
//! are never downloaded: present in the target repository, they are skipped;
//! on the same registry, mounted; elsewhere, stream-copied.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use cache_proto::Key;

use crate::exclude::Excludes;
use crate::image::oci::{self, Flavor, Platform};
use crate::image::registry::{Registry, RegistryError, Transfer, parse_reference};
use crate::layer::{self, Compression, PackOptions};
use crate::record::RecordStore;
use crate::tree;

/// What goes into the app layer and its config.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// Target `repository[:tag]`.
    pub image: String,
    /// Folder packed as the layer.
    pub context: PathBuf,
    /// Absolute folder in the image.
    pub dest: String,
    /// Patterns left out, on top of `.dockerignore`.
    pub exclude: Vec<String>,
    /// Command, if set.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint, if set.
    pub entrypoint: Option<Vec<String>>,
    /// Environment merged over the base's.
    pub env: BTreeMap<String, String>,
    /// Working directory, if set.
    pub workdir: Option<String>,
    /// User, if set.
    pub user: Option<String>,
    /// Labels merged over the base's.
    pub labels: BTreeMap<String, String>,
    /// Platform picked from a multi-platform base.
    pub platform: Platform,
    /// Layer compression.
    pub compression: Compression,
    /// With an image index as base: put the app on every platform's image
    /// and push a new index (`--platform all`).
    pub all_platforms: bool,
}

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

/// The outcome, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Whether an identical earlier push was recognised (nothing packed or uploaded).
    pub reused: bool,
    /// Target repository and tag.
    pub image: String,
    /// Pullable reference with digest.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// The base it was put on.
    pub base: String,
    /// Digest of the app layer (compressed).
    pub layer_digest: String,
    /// Size of the app layer (compressed).
    pub layer_bytes: u64,
    /// Bytes uploaded to the registry (0 for an unchanged app).
    pub uploaded_bytes: u64,
    /// Base layers mounted from the base's repository.
    pub mounted: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Seconds packing the layer.
    pub layer_seconds: f64,
    /// Seconds pushing.
    pub push_seconds: f64,
    /// Wall time.
    pub seconds: f64,
}

/// Why `layer` failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Settings or inputs the command cannot use (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Packing the layer failed.
    #[error("packing {path}: {source}")]
    Pack {
        /// The context.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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

/// Makes the base `layers` present in `target`'s repository (skipped when
/// there, mounted on the same registry, else stream-copied); returns the
/// bytes uploaded and how many were mounted and skipped.
async fn copy_base_layers(
    registry: &Registry,
    source: &oci_client::Reference,
    target: &oci_client::Reference,
    layers: &[Value],
) -> Result<(u64, usize, usize), LayerError> {
    let (mut uploaded, mut mounted, mut skipped) = (0u64, 0usize, 0usize);
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap_or_default();
        let size = layer["size"].as_u64().unwrap_or(0);
        match registry.copy_blob(source, target, digest, size).await? {
            Transfer::Present => skipped += 1,
            Transfer::Mounted => mounted += 1,
            Transfer::Copied(bytes) => uploaded += bytes,
        }
    }
    Ok((uploaded, mounted, skipped))
}

/// Where a multi-platform app image goes.
struct IndexTarget {
    reference: oci_client::Reference,
    name: String,
    tag: String,
}

/// The layer media type for `compression` on a base of `flavor`.
fn layer_type(
    compression: Compression,
    flavor: Flavor,
    base: &str,
) -> Result<&'static str, LayerError> {
    match (compression, flavor) {
        (Compression::Gzip(_), _) => Ok(flavor.gzip_layer()),
        (Compression::Zstd(_), Flavor::Oci) => Ok(oci::OCI_LAYER_ZSTD),
        (Compression::Zstd(_), Flavor::Docker) => Err(LayerError::Usage(format!(
            "{base} is a Docker schema-2 image, which has no zstd layer type; use gzip or an OCI base"
        ))),
    }
}

/// Packs the context once, in a staging folder that lives as long as the layer.
async fn pack_app(app: &AppSettings) -> Result<(layer::Layer, tempfile::TempDir), LayerError> {
    let pack_error = |source| LayerError::Pack {
        path: app.context.display().to_string(),
        source,
    };
    let excludes = Excludes::for_context(&app.context, &app.exclude).map_err(LayerError::Usage)?;
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
        };
        layer::pack_with(&context, &staging_path, options)
    })
    .await
    .map_err(|e| pack_error(std::io::Error::other(e)))?
    .map_err(pack_error)?;
    Ok((packed, staging))
}

/// `--platform all` over an image index: the same app layer on every
/// platform's image, each pushed by digest, then a new index under the tag.
async fn layer_index(
    registry: &Registry,
    base: &str,
    base_reference: &oci_client::Reference,
    index: crate::image::registry::PulledManifest,
    target: IndexTarget,
    app: &AppSettings,
    started: Instant,
) -> Result<LayerReport, LayerError> {
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
    let base_name = format!(
        "{}/{}",
        base_reference.registry(),
        base_reference.repository()
    );
    let (mut uploaded, mut mounted, mut skipped) = (0u64, 0usize, 0usize);
    uploaded += registry
        .push_blob_file(&target.reference, &packed.digest, packed.file.path())
        .await?;
    let mut entries = Vec::new();
    for entry in index.json["manifests"].as_array().into_iter().flatten() {
        let Some(digest) = entry["digest"].as_str() else {
            continue;
        };
        let platform_reference = base_reference.clone_with_digest(digest.to_owned());
        let image = registry.pull_manifest_as_is(&platform_reference).await?;
        let flavor = Flavor::of_manifest(&image.media_type);
        let config_digest = image.json["config"]["digest"]
            .as_str()
            .ok_or_else(|| LayerError::Usage(format!("{base}: {digest} has no config")))?;
        let config_bytes = registry
            .pull_small_blob(&platform_reference, config_digest)
            .await?;
        let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
            LayerError::Usage(format!("{base}: config of {digest} is not JSON: {e}"))
        })?;
        let layers = image.json["layers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (copied, mounted_here, skipped_here) =
            copy_base_layers(registry, &platform_reference, &target.reference, layers).await?;
        uploaded += copied;
        mounted += mounted_here;
        skipped += skipped_here;
        let (config_bytes, manifest_bytes) = compose(
            &image.json,
            config,
            (flavor, layer_type),
            &packed,
            app,
            (&base_name, &image.digest),
        );
        uploaded += registry
            .push_blob_bytes(&target.reference, &config_bytes)
            .await?;
        let manifest_digest = oci::sha256_digest(&manifest_bytes);
        let by_digest = target.reference.clone_with_digest(manifest_digest.clone());
        registry
            .push_manifest(&by_digest, &manifest_bytes, flavor.manifest())
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
    registry
        .push_manifest(&target.reference, &index_bytes, &index.media_type)
        .await?;
    let digest = oci::sha256_digest(&index_bytes);
    Ok(LayerReport {
        reused: false,
        image: format!("{}:{}", target.name, target.tag),
        reference: format!("{}@{digest}", target.name),
        digest,
        base: base.to_owned(),
        layer_digest: packed.digest.clone(),
        layer_bytes: packed.size,
        uploaded_bytes: uploaded,
        mounted,
        skipped,
        layer_seconds,
        push_seconds: push_started.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The config and manifest of the app image on one base image.
fn compose(
    base_manifest: &Value,
    base_config: Value,
    (flavor, layer_type): (Flavor, &str),
    packed: &layer::Layer,
    app: &AppSettings,
    (base_name, base_digest): (&str, &str),
) -> (Vec<u8>, Vec<u8>) {
    let config = app_config(base_config, app, &packed.diff_id, base_name, base_digest);
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let mut layers = base_manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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
/// tree of the context.
fn app_key(base_digest: &str, app: &AppSettings, excludes: &Excludes) -> std::io::Result<Key> {
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
    tree::hash_tree(&app.context, excludes, &mut hasher)?;
    Ok(Key::from_bytes(*hasher.finalize().as_bytes()))
}

/// Tags an identical earlier push again if the target repository has it.
async fn reuse(
    registry: &Registry,
    target: &oci_client::Reference,
    record: &AppRecord,
) -> Result<bool, LayerError> {
    let by_digest = target.clone_with_digest(record.manifest_digest.clone());
    if registry.resolve(&by_digest).await?.is_none() {
        return Ok(false);
    }
    if registry.resolve(target).await?.as_deref() != Some(record.manifest_digest.as_str()) {
        registry
            .push_manifest(target, record.manifest.as_bytes(), &record.media_type)
            .await?;
    }
    Ok(true)
}

/// Puts the app on `base` and pushes it as `app.image`. With `records`, an
/// app identical to an earlier push (same base, settings and tree) is only
/// checked with HEAD requests and tagged, without packing.
pub async fn layer(
    registry: &Registry,
    records: Option<&RecordStore>,
    base: &str,
    app: &AppSettings,
) -> Result<LayerReport, LayerError> {
    let started = Instant::now();
    let base_reference = parse_reference(base)?;
    let (name, tag) = match app.image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (app.image.clone(), "latest".to_owned()),
    };
    let target = parse_reference(&format!("{name}:{tag}"))?;

    if app.all_platforms {
        let top = registry.pull_manifest_as_is(&base_reference).await?;
        if top.media_type == oci::OCI_INDEX || top.media_type == oci::DOCKER_LIST {
            let target = IndexTarget {
                reference: target,
                name,
                tag,
            };
            return layer_index(registry, base, &base_reference, top, target, app, started).await;
        }
    }
    let manifest = registry
        .pull_manifest(&base_reference, &app.platform)
        .await?;
    let flavor = Flavor::of_manifest(&manifest.media_type);
    let config_digest = manifest.json["config"]["digest"]
        .as_str()
        .ok_or_else(|| LayerError::Usage(format!("{base}: manifest has no config")))?;
    let base_config: Value = serde_json::from_slice(
        &registry
            .pull_small_blob(&base_reference, config_digest)
            .await?,
    )
    .map_err(|e| LayerError::Usage(format!("{base}: config is not JSON: {e}")))?;
    let base_layers = manifest.json["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    let layer_type = layer_type(app.compression, flavor, base)?;
    let layer_started = Instant::now();
    let excludes = Excludes::for_context(&app.context, &app.exclude).map_err(LayerError::Usage)?;
    let key = {
        let (base_digest, settings, excludes) =
            (manifest.digest.clone(), app.clone(), excludes.clone());
        tokio::task::spawn_blocking(move || app_key(&base_digest, &settings, &excludes))
            .await
            .ok()
            .and_then(Result::ok)
    };
    if let (Some(records), Some(key)) = (records, key) {
        match records.get::<AppRecord>(&key).await {
            Ok(Some(record)) if reuse(registry, &target, &record).await? => {
                return Ok(LayerReport {
                    reused: true,
                    image: format!("{name}:{tag}"),
                    reference: format!("{name}@{}", record.manifest_digest),
                    digest: record.manifest_digest,
                    base: base.to_owned(),
                    layer_digest: record.layer_digest,
                    layer_bytes: record.layer_bytes,
                    uploaded_bytes: 0,
                    mounted: 0,
                    skipped: base_layers.len() + 2,
                    layer_seconds: layer_started.elapsed().as_secs_f64(),
                    push_seconds: 0.0,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            Ok(_) => {}
            Err(error) => eprintln!("warning: {error}; packing the app without the cache"),
        }
    }
    let (packed, _staging) = pack_app(app).await?;
    let layer_seconds = layer_started.elapsed().as_secs_f64();

    let base_name = format!(
        "{}/{}",
        base_reference.registry(),
        base_reference.repository()
    );
    let (config_bytes, manifest_bytes) = compose(
        &manifest.json,
        base_config,
        (flavor, layer_type),
        &packed,
        app,
        (&base_name, &manifest.digest),
    );

    let push_started = Instant::now();
    let (mut uploaded, mounted, mut skipped) =
        copy_base_layers(registry, &base_reference, &target, &base_layers).await?;
    for (pushed, _) in [
        (
            registry
                .push_blob_file(&target, &packed.digest, packed.file.path())
                .await?,
            "layer",
        ),
        (
            registry.push_blob_bytes(&target, &config_bytes).await?,
            "config",
        ),
    ] {
        if pushed == 0 {
            skipped += 1;
        }
        uploaded += pushed;
    }
    registry
        .push_manifest(&target, &manifest_bytes, flavor.manifest())
        .await?;
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
            eprintln!("warning: could not record the app image: {error}");
        }
    }
    Ok(LayerReport {
        reused: false,
        image: format!("{name}:{tag}"),
        reference: format!("{name}@{digest}"),
        digest,
        base: base.to_owned(),
        layer_digest: packed.digest,
        layer_bytes: packed.size,
        uploaded_bytes: uploaded,
        mounted,
        skipped,
        layer_seconds,
        push_seconds: push_started.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_config_merges_over_the_base() {
        let base = json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Env": ["PATH=/bin", "MODE=base"], "Cmd": ["/bin/sh"], "Labels": { "team": "infra" } },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:aa"] },
            "history": [{ "created_by": "base" }]
        });
        let app = AppSettings {
            image: "r/x".into(),
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
    }
}
