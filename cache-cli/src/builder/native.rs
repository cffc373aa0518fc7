//! The daemonless `native` builder: start from `from` (or an empty image),
//! run `install` with `{out}` replaced by an empty folder, and add that
//! folder as one reproducible layer. With a `from` image the step runs
//! inside that image's userland (see [`super::sandbox`]) unless
//! `install_in = "host"`; without one it runs on the host.

use std::collections::BTreeMap;
use std::path::Path;

use cache_proto::Key;

use super::package_install::InImage;
use super::package_layers::{self, PackageLayers};
pub use super::step::{Capture, InstallIn};
use super::{BuildError, rootfs, run_streaming, sandbox};
use crate::image::compose::{self, TopLayer};
use crate::image::config::{History, ImageConfig};
use crate::image::oci::{Flavor, Platform};
use crate::image::publish::{BaseImage, NewImage, NewLayer};
use crate::image::registry::{Registry, parse_reference};
use crate::pack::layer;
use crate::report::outcome::PackageLayer;

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
    /// Package layers, when the step is a pip install they can take
    /// apart and they are not turned off.
    pub package_layers: Option<PackageLayers<'a>>,
}

/// The `from` image as started from: its layers, config, media-type
/// family and manifest digest.
struct Start {
    base: Option<BaseImage>,
    config: ImageConfig,
    flavor: Flavor,
    digest: Option<String>,
}

async fn start_from(registry: &Registry, spec: &NativeSpec<'_>) -> Result<Start, BuildError> {
    let Some(from) = spec.from else {
        return Ok(Start {
            base: None,
            config: ImageConfig::default(),
            flavor: Flavor::Oci,
            digest: None,
        });
    };
    let reference = parse_reference(from)?;
    let pulled = registry.pull_manifest(&reference, spec.platform).await?;
    let manifest = pulled
        .image()
        .ok_or_else(|| BuildError::Base(format!("{from}: an index where an image was expected")))?;
    let config_bytes = registry
        .pull_small_blob(&reference, manifest.config.digest.as_str())
        .await?;
    let config = ImageConfig::parse(&config_bytes, from)
        .map_err(|invalid| BuildError::Base(invalid.to_string()))?;
    let layers = manifest.layers.clone();
    Ok(Start {
        base: Some(BaseImage { reference, layers }),
        config,
        flavor: Flavor::of_manifest(&pulled.media_type),
        digest: Some(pulled.digest.to_string()),
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
    let image = Sandboxed {
        registry,
        spec,
        start,
        base,
        digest,
    };
    image.run_capturing(out, &command, changes).await?;
    if let Some(changes) = changes {
        super::changes::merge(out, changes)
            .map_err(BuildError::io("adding {out} to the changes"))?;
    }
    Ok(())
}

/// The `from` image's userland, where steps run.
struct Sandboxed<'a> {
    registry: &'a Registry,
    spec: &'a NativeSpec<'a>,
    start: &'a Start,
    base: &'a BaseImage,
    digest: &'a str,
}

impl Sandboxed<'_> {
    /// Runs `command` in the image with `out` bound in; with `changes`,
    /// what it changed in the image goes there.
    async fn run_capturing(
        &self,
        out: &Path,
        command: &str,
        changes: Option<&Path>,
    ) -> Result<(), BuildError> {
        let spec = self.spec;
        let rootfs =
            rootfs::unpacked(self.registry, self.base, self.digest, spec.rootfs_cache).await?;
        let image_env = self.start.config.env().to_vec();
        let args: Vec<(String, String)> = spec.args.clone().into_iter().collect();
        let scratch = spec.rootfs_cache.join(".work");
        std::fs::create_dir_all(&scratch).map_err(BuildError::io("creating a work folder"))?;
        sandbox::run(&sandbox::Step {
            rootfs: &rootfs,
            scratch: &scratch,
            project: spec.root,
            out,
            command,
            image_env: &image_env,
            args: &args,
            changes,
        })
        .await
    }
}

impl InImage for Sandboxed<'_> {
    async fn run(&self, out: &Path, command: &str) -> Result<(), BuildError> {
        self.run_capturing(out, command, None).await
    }
}

/// Builds the image with package layers: the `from` image's layers, one
/// per package or group, and the glue.
async fn build_package_layers(
    registry: &Registry,
    spec: &NativeSpec<'_>,
    start: &Start,
    layers: PackageLayers<'_>,
    staging: &Path,
) -> Result<Result<NewImage, String>, BuildError> {
    let (Some(base), Some(digest)) = (&start.base, &start.digest) else {
        return Err(BuildError::Base("package layers need a from image".into()));
    };
    let in_image = Sandboxed {
        registry,
        spec,
        start,
        base,
        digest,
    };
    let built = match package_layers::build(
        registry,
        &in_image,
        layers,
        digest,
        base.layers.len(),
        staging,
    )
    .await?
    {
        package_layers::Stacked::Built(built) => built,
        package_layers::Stacked::OneLayer(why) => return Ok(Err(why)),
    };
    let base = start.base.clone();
    let mut config = start.config.clone();
    let flavor = start.flavor;
    config.architecture = Some(spec.platform.architecture.clone());
    config.os = Some(spec.platform.os.clone());
    config
        .run_config()
        .set_label(KEY_LABEL, &spec.key.to_string());
    let results: Vec<&package_layers::StackResult> =
        built.stack.iter().chain(built.glue.as_ref()).collect();
    let tops = results
        .iter()
        .map(|result| {
            let top = TopLayer {
                digest: &result.digest,
                diff_id: &result.diff_id,
                size: result.size,
                media_type: flavor.gzip_layer(),
            };
            let what = if result.packages.is_empty() {
                "executables, manifests and shared files".to_owned()
            } else {
                result.packages.join(" ")
            };
            let step = History {
                created_by: Some(format!("cachectl package layer {}: {what}", result.name)),
                comment: Some(format!("cachectl base key {}", spec.key)),
                ..History::default()
            };
            (top, step)
        })
        .collect();
    let base_layers = base.as_ref().map_or(&[][..], |base| &base.layers);
    let composed = compose::compose_stack(flavor, config, base_layers, tops);
    let layers = results
        .iter()
        .map(|result| NewLayer {
            digest: result.digest.clone(),
            file: result.file.clone(),
        })
        .collect();
    let package_layers = results
        .iter()
        .map(|result| PackageLayer {
            name: result.name.clone(),
            packages: result.packages.clone(),
            digest: result.digest.to_string(),
            bytes: result.size,
            source: if result.file.is_some() {
                "built"
            } else {
                "reused"
            },
        })
        .collect();
    Ok(Ok(NewImage {
        base,
        layers,
        package_layers,
        warnings: built.warnings,
        config: composed.config,
        manifest: composed.manifest,
        media_type: flavor.manifest().to_owned(),
    }))
}

/// Builds the image. The layer file lives in `staging`.
pub async fn build(
    registry: &Registry,
    spec: &NativeSpec<'_>,
    staging: &Path,
) -> Result<NewImage, BuildError> {
    let start = start_from(registry, spec).await?;
    let mut warnings = Vec::new();
    if let Some(layers) = spec.package_layers
        && start.base.is_some()
        && spec.install_in == InstallIn::Image
        && spec.capture == Capture::Out
    {
        match build_package_layers(registry, spec, &start, layers, staging).await? {
            Ok(image) => return Ok(image),
            Err(why) => warnings.push(format!(
                "package layers: {why}: the dependencies are one layer, as without them"
            )),
        }
    }
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

    // The platform built for, whatever the `from` image's config said.
    config.architecture = Some(spec.platform.architecture.clone());
    config.os = Some(spec.platform.os.clone());
    config
        .run_config()
        .set_label(KEY_LABEL, &spec.key.to_string());
    let step = History {
        created_by: Some(format!("cachectl native: {}", spec.install)),
        comment: Some(format!("cachectl base key {}", spec.key)),
        ..History::default()
    };
    let base_layers = base.as_ref().map_or(&[][..], |base| &base.layers);
    let top = TopLayer {
        digest: &layer.digest,
        diff_id: &layer.diff_id,
        size: layer.size,
        media_type: flavor.gzip_layer(),
    };
    let composed = compose::compose(flavor, config, base_layers, top, step);
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
        layers: vec![NewLayer {
            digest: layer.digest,
            file: Some(layer_file),
        }],
        package_layers: Vec::new(),
        warnings,
        config: composed.config,
        manifest: composed.manifest,
        media_type: flavor.manifest().to_owned(),
    })
}
