//! The daemonless `native` builder: start from `from` (or an empty image),
//! run `install` with `{out}` replaced by an empty folder, and add that
//! folder as one reproducible layer. With a `from` image the step runs
//! inside that image's userland (see [`super::sandbox`]) unless
//! `install_in = "host"`; without one it runs on the host.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use cache_proto::Key;
use serde_json::{Value, json};

use super::{BuildError, rootfs, run_streaming, sandbox};
use crate::image::oci::{self, Flavor, Platform};
use crate::image::publish::{BaseImage, BaseLayer, NewImage};
use crate::image::registry::{Registry, parse_reference};
use crate::invalid::Invalid;
use crate::pack::layer;

/// Label holding the base key in the image config.
pub const KEY_LABEL: &str = "dev.cachectl.base-key";

/// What the native builder needs.
#[derive(Debug, Clone)]
pub struct NativeSpec<'a> {
    /// Project root: the install command runs there.
    pub root: &'a Path,
    /// Starting image, if any.
    pub from: Option<&'a str>,
    /// Install command, with `{out}`.
    pub install: &'a str,
    /// Build arguments, exported to the install command.
    pub args: &'a BTreeMap<String, String>,
    /// Target platform.
    pub platform: &'a Platform,
    /// The base key, recorded as a label and in the history.
    pub key: &'a Key,
    /// Where the install step runs.
    pub install_in: InstallIn,
    /// What becomes the layer.
    pub capture: Capture,
    /// Folder of the unpacked `from` root filesystems.
    pub rootfs_cache: &'a Path,
}

/// Where the native builder's install step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallIn {
    /// Inside the `from` image's root filesystem.
    Image,
    /// On the host (the only choice without a `from` image).
    Host,
}

impl InstallIn {
    /// Parses `image` or `host`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "image" => Ok(Self::Image),
            "host" => Ok(Self::Host),
            other => Err(Invalid(format!("{other:?} is not image or host"))),
        }
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Host => "host",
        }
    }
}

/// What becomes the native builder's layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capture {
    /// What the step wrote under `{out}`, normalised (modes 0644/0755,
    /// owner root).
    #[default]
    Out,
    /// Everything the step changed in the `from` image's root filesystem
    /// (deletions as whiteouts), modes and owners kept, plus `{out}`'s
    /// content at the root.
    Changes,
}

impl Capture {
    /// Parses `out` or `changes`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "out" => Ok(Self::Out),
            "changes" => Ok(Self::Changes),
            other => Err(Invalid(format!("{other:?} is not out or changes"))),
        }
    }
}

/// The `from` image as started from: its layers, config, media-type
/// family and manifest digest.
struct Start {
    base: Option<BaseImage>,
    config: Value,
    flavor: Flavor,
    digest: Option<String>,
}

/// The image creation time: `SOURCE_DATE_EPOCH` or the epoch, so that the
/// same inputs give the same config.
fn created() -> String {
    let time = UNIX_EPOCH + Duration::from_secs(layer::source_date_epoch());
    humantime::format_rfc3339_seconds(time).to_string()
}

async fn start_from(registry: &Registry, spec: &NativeSpec<'_>) -> Result<Start, BuildError> {
    let Some(from) = spec.from else {
        let config = json!({
            "architecture": spec.platform.architecture,
            "os": spec.platform.os,
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [] },
            "history": []
        });
        return Ok(Start {
            base: None,
            config,
            flavor: Flavor::Oci,
            digest: None,
        });
    };
    let reference = parse_reference(from)?;
    let manifest = registry.pull_manifest(&reference, spec.platform).await?;
    let config_digest = manifest.json["config"]["digest"]
        .as_str()
        .ok_or_else(|| BuildError::Base(format!("{from}: manifest has no config")))?;
    let config_bytes = registry.pull_small_blob(&reference, config_digest).await?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| BuildError::Base(format!("{from}: config is not JSON: {e}")))?;
    let layers = manifest.json["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(BaseLayer::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| BuildError::Base(format!("{from}: {message}")))?;
    let flavor = Flavor::of_manifest(&manifest.media_type);
    Ok(Start {
        base: Some(BaseImage { reference, layers }),
        config,
        flavor,
        digest: Some(manifest.digest),
    })
}

/// Runs the install step with `{out}` replaced by `out`: inside the `from`
/// image when there is one and the spec says so, else on the host. With
/// `changes`, what the step changed in the image goes there, `{out}`'s
/// content merged in.
async fn install(
    registry: &Registry,
    spec: &NativeSpec<'_>,
    start: &Start,
    out: &Path,
    changes: Option<&Path>,
) -> Result<(), BuildError> {
    let command = spec.install.replace("{out}", &out.display().to_string());
    let args: Vec<(String, String)> = spec.args.clone().into_iter().collect();
    let (Some(base), Some(digest), InstallIn::Image) =
        (&start.base, &start.digest, spec.install_in)
    else {
        let mut env = args;
        env.push(("CACHECTL_OUT".into(), out.display().to_string()));
        return run_streaming("sh", &["-c".to_owned(), command], spec.root, &env).await;
    };
    let rootfs = rootfs::unpacked(registry, base, digest, spec.rootfs_cache).await?;
    let image_env: Vec<String> = start.config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect();
    let scratch = spec.rootfs_cache.join(".work");
    std::fs::create_dir_all(&scratch).map_err(BuildError::io("creating a work folder"))?;
    sandbox::run(&sandbox::Step {
        rootfs: &rootfs,
        scratch: &scratch,
        project: spec.root,
        out,
        command: &command,
        image_env: &image_env,
        args: &args,
        changes,
    })
    .await?;
    if let Some(changes) = changes {
        super::changes::merge(out, changes)
            .map_err(BuildError::io("adding {out} to the changes"))?;
    }
    Ok(())
}

/// Builds the image. The layer file lives in `staging`.
pub async fn build(
    registry: &Registry,
    spec: &NativeSpec<'_>,
    staging: &Path,
) -> Result<NewImage, BuildError> {
    let start = start_from(registry, spec).await?;
    let out = tempfile::tempdir_in(staging).map_err(BuildError::io("creating {out}"))?;
    // With `capture = "changes"` the layer is the image's changes (with
    // `{out}` merged in), modes and owners kept.
    let changes = match spec.capture {
        Capture::Changes => {
            Some(tempfile::tempdir_in(staging).map_err(BuildError::io("creating a folder"))?)
        }
        Capture::Out => None,
    };
    let changes_path = changes.as_ref().map(tempfile::TempDir::path);
    install(registry, spec, &start, out.path(), changes_path).await?;
    let (layer_root, keep_owners) = match changes_path {
        Some(changes) => (changes.to_owned(), true),
        None => (out.path().to_owned(), false),
    };
    let Start {
        base,
        mut config,
        flavor,
        ..
    } = start;

    let staging_path = staging.to_owned();
    let layer = tokio::task::spawn_blocking(move || {
        let options = layer::PackOptions {
            keep_owners,
            ..layer::PackOptions::default()
        };
        layer::pack_with(&layer_root, &staging_path, options)
    })
    .await
    .map_err(|e| BuildError::Io {
        what: "packing the layer".into(),
        source: std::io::Error::other(e),
    })?
    .map_err(BuildError::io("packing the layer"))?;

    let created = created();
    config["created"] = json!(created);
    config["architecture"] = json!(spec.platform.architecture);
    config["os"] = json!(spec.platform.os);
    if !config["rootfs"]["diff_ids"].is_array() {
        config["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
    }
    if let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array_mut() {
        diff_ids.push(json!(layer.diff_id));
    }
    let history = json!({
        "created": created,
        "created_by": format!("cachectl native: {}", spec.install),
        "comment": format!("cachectl base key {}", spec.key),
    });
    match config["history"].as_array_mut() {
        Some(entries) => entries.push(history),
        None => config["history"] = json!([history]),
    }
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    if !config["config"]["Labels"].is_object() {
        config["config"]["Labels"] = json!({});
    }
    config["config"]["Labels"][KEY_LABEL] = json!(spec.key.to_string());
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();

    let mut layers: Vec<Value> = base
        .iter()
        .flat_map(|base| base.layers.iter().map(|layer| layer.descriptor.clone()))
        .collect();
    layers.push(oci::descriptor(
        flavor.gzip_layer(),
        &layer.digest,
        layer.size,
    ));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": flavor.manifest(),
        "config": oci::descriptor(
            flavor.config(),
            &oci::sha256_digest(&config_bytes),
            config_bytes.len() as u64
        ),
        "layers": layers,
    });
    let layer_file = layer
        .file
        .into_temp_path()
        .keep()
        .map_err(|e| BuildError::Io {
            what: "keeping the layer file".into(),
            source: e.error,
        })?;
    Ok(NewImage {
        base,
        layer_file,
        layer_digest: layer.digest,
        config: config_bytes,
        manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
        media_type: flavor.manifest().to_owned(),
    })
}
