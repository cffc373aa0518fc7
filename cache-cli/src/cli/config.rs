//! `cachectl.toml`: the project's settings, merged under flags and
//! `CACHECTL_*` environment variables (flag > env > file > default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// The file as written. Unknown fields are errors, so a typo is caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Base URL of a cache-server.
    pub cache: Option<String>,
    /// Cache namespace (default: from the CI system).
    pub namespace: Option<String>,
    /// Audience of the CI job's ID token presented to the cache server.
    pub oidc_audience: Option<String>,
    /// The base image section.
    #[serde(default)]
    pub base: BaseSection,
    /// The app section (used by `cachectl layer` and `cachectl build`).
    #[serde(default)]
    pub app: AppSection,
    /// `[images.NAME]`: a project of several images, each with its own
    /// `base` and `app` (whose fields replace the same fields of the
    /// top-level `[base]` and `[app]`, which then hold what they share).
    #[serde(default)]
    pub images: BTreeMap<String, ImageSection>,
    /// The image of `images` this file was narrowed to by
    /// [`ConfigFile::select`].
    #[serde(skip)]
    pub selected: Option<Selected>,
}

/// The image a configuration was narrowed to.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Its name (the key of `[images.NAME]`).
    pub name: String,
    /// Its folder, relative to the file's.
    pub dir: Option<PathBuf>,
}

/// `[images.NAME]`: one image of a project with several.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// The image's folder, relative to the file's: its manifests, build
    /// context, Dockerfile and app context are found from there (default:
    /// the file's folder).
    pub dir: Option<String>,
    /// Its base.
    #[serde(default)]
    pub base: BaseSection,
    /// Its app.
    #[serde(default)]
    pub app: AppSection,
}

impl ConfigFile {
    /// The names of `[images.NAME]`, sorted.
    pub fn image_names(&self) -> Vec<String> {
        self.images.keys().cloned().collect()
    }

    /// This file narrowed to the image `name`: its `base` and `app` are the
    /// image's fields over the top-level ones, its root the image's `dir`.
    pub fn select(&self, path: &Path, name: &str) -> Result<ConfigFile, ConfigError> {
        let path_text = path.display().to_string();
        let image = self.images.get(name).ok_or_else(|| ConfigError::Field {
            path: path_text.clone(),
            field: "images",
            message: format!(
                "there is no [images.{name}] (the images are {})",
                self.image_names().join(", ")
            ),
        })?;
        let merge_error = |field: &'static str| {
            let path_text = path_text.clone();
            move |message: Invalid| ConfigError::Field {
                path: path_text,
                field,
                message: message.to_string(),
            }
        };
        let dir = image.dir.as_deref().map(PathBuf::from);
        if let Some(dir) = &dir
            && (dir.is_absolute()
                || dir
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            return Err(ConfigError::Field {
                path: path_text,
                field: "images.dir",
                message: format!(
                    "[images.{name}] dir = {:?}: a folder inside the project is expected",
                    dir.display()
                ),
            });
        }
        Ok(ConfigFile {
            cache: self.cache.clone(),
            namespace: self.namespace.clone(),
            oidc_audience: self.oidc_audience.clone(),
            base: over(&self.base, &image.base).map_err(merge_error("images.base"))?,
            app: over(&self.app, &image.app).map_err(merge_error("images.app"))?,
            images: BTreeMap::new(),
            selected: Some(Selected {
                name: name.to_owned(),
                dir,
            }),
        })
    }
}

/// `own`'s fields over `defaults`' (a field `own` sets replaces the same
/// field of `defaults`, maps included).
fn over<T: Serialize + DeserializeOwned>(defaults: &T, own: &T) -> Result<T, Invalid> {
    let mut table = toml::Table::try_from(defaults).map_err(|e| e.to_string())?;
    for (field, value) in toml::Table::try_from(own).map_err(|e| e.to_string())? {
        table.insert(field, value);
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| Invalid(e.to_string()))
}

/// `[base]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSection {
    /// Repository of the base image, or `oci:DIR[:NAME]` for a local OCI layout.
    pub image: Option<String>,
    /// Glob patterns (relative to the project root) of the dependency manifests.
    pub manifests: Option<Vec<String>>,
    /// `native`, `docker`, `buildah` or `podman`.
    pub builder: Option<String>,
    /// Dockerfile of the base, for docker, buildah and podman.
    pub dockerfile: Option<String>,
    /// Build context of docker, buildah and podman (default: the project root).
    pub context: Option<String>,
    /// Image the native builder starts from (default: an empty image).
    pub from: Option<String>,
    /// Shell command of the native builder; `{out}` is the folder that becomes the layer.
    pub install: Option<String>,
    /// Where the native builder's install step runs: `image` (inside the
    /// `from` image's userland; the default with a `from` image of the
    /// host's architecture) or `host`.
    pub install_in: Option<String>,
    /// What becomes the native builder's layer: `out` (what the install
    /// step wrote under `{out}`, the default) or `changes` (everything it
    /// changed in the `from` image, modes and owners kept; needs
    /// `install_in = "image"`).
    pub capture: Option<String>,
    /// Package layers: `on` (the default: a native step whose last command
    /// is `pip install ... --target {out}/PREFIX` becomes one layer per
    /// package, and a glue layer) or `off` (one layer).
    pub package_layers: Option<String>,
    /// With package layers: at most this many layers in the base image,
    /// the `from` image's and the glue included (default 100; registries
    /// and overlayfs break near 125).
    pub max_layers: Option<usize>,
    /// Build arguments.
    pub args: Option<BTreeMap<String, String>>,
    /// Target platform, `os/arch[/variant]`.
    pub platform: Option<String>,
    /// A moving tag also pushed for every new base (e.g. `latest`).
    pub tag: Option<String>,
    /// `track` (default): the key follows the digests the upstream images'
    /// tags resolve to; `pin`: only the references as written.
    pub upstream: Option<String>,
    /// Options added to the docker, buildah or podman build command (e.g.
    /// `["--network=host"]`); not part of the key.
    pub builder_args: Option<Vec<String>>,
}

/// `[app]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Target repository, with an optional tag (default `latest`).
    pub image: Option<String>,
    /// Folder packed as the app layer (default: the project root).
    pub context: Option<String>,
    /// Where it goes in the image (default `/app`).
    pub dest: Option<String>,
    /// Patterns left out, on top of `.dockerignore`.
    pub exclude: Option<Vec<String>>,
    /// Command.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, merged over the base's.
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Ports the app listens on (`8000`, `8000/tcp`, `53/udp`), exposed
    /// beside the base's.
    pub expose: Option<Vec<String>>,
    /// Labels, merged over the base's.
    pub labels: Option<BTreeMap<String, String>>,
    /// Layer compression: `gzip` (default) or `zstd` (OCI bases only).
    pub compression: Option<String>,
    /// Compression level (gzip 0-9, default 1; zstd 1-22, default 3).
    pub compression_level: Option<i32>,
    /// Tag every pushed app image `TAG.deploy-TIME` too (default true): the
    /// history `cachectl history`, `rollback` and `gc` work from.
    pub deploy_tags: Option<bool>,
    /// `changes` (the default: a deploy pushes a layer of what changed
    /// since the last one, on its layers; compacted past a bound) or `one`
    /// (the whole app as one layer on every deploy).
    pub layers: Option<String>,
    /// With `layers = "changes"`: at most this many delta layers on the
    /// full one before the app is one layer again (default 8).
    pub max_deltas: Option<usize>,
    /// With `layers = "changes"`: at most this share of the app's bytes in
    /// delta layers before the app is one layer again (default 0.25).
    pub max_delta_share: Option<f64>,
}

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a field of the wrong type or name.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line, column and field.
        message: String,
    },
    /// There is no configuration file, and the flags do not say enough.
    #[error(
        "there is no {path} in {folder}: `cachectl init` writes one for the project there; \
         or run cachectl from the project's folder, name the file with --config, or give the \
         settings as flags ({flags}, ...)"
    )]
    Missing {
        /// The file looked for.
        path: String,
        /// The folder it was looked for in.
        folder: String,
        /// The flags that would name what is missing.
        flags: String,
    },
    /// A field is missing or has a value that cannot be used.
    #[error("{path}: {field}: {message}")]
    Field {
        /// The file (or `flags` when none was read).
        path: String,
        /// e.g. `base.builder`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Reads `path`; a missing file is an empty configuration when `required` is false.
pub fn load(path: &Path, required: bool) -> Result<ConfigFile, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(ConfigFile::default());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.display().to_string(),
        message: error.to_string().trim_end().to_owned(),
    })
}

/// The project root: the folder holding the configuration file.
pub fn project_root(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("cachectl.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, true)
    }

    #[test]
    fn reads_the_documented_example() {
        let config = parse(
            r#"
cache = "http://cache.internal:8080"
[base]
image = "registry.example.com/acme/web-base"
manifests = ["requirements/*.txt", "Dockerfile.base"]
builder = "native"
from = "registry.example.com/library/python:3.12-slim"
install = "pip install --target {out}/opt/deps -r requirements/base.txt"
args = { PYTHON = "3.12" }
[app]
image = "registry.example.com/acme/web"
cmd = ["gunicorn", "web.wsgi"]
"#,
        )
        .unwrap();
        assert_eq!(config.cache.as_deref(), Some("http://cache.internal:8080"));
        assert_eq!(config.base.manifests.unwrap().len(), 2);
        assert_eq!(config.base.args.unwrap()["PYTHON"], "3.12");
    }

    #[test]
    fn a_typo_or_wrong_type_names_the_field_and_line() {
        let error = parse("[base]\nbulder = \"native\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bulder"), "{error}");
        let error = parse("[base]\nmanifests = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("manifests") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn an_image_section_replaces_the_shared_fields_it_sets() {
        let config = parse(
            r#"
[base]
builder = "native"
platform = "linux/amd64"
args = { A = "1" }
[app]
workdir = "/srv"
[images.api]
dir = "backend"
base = { image = "reg/api-base", manifests = ["go.sum"], args = { B = "2" } }
app = { image = "reg/api" }
[images.web.base]
image = "reg/web-base"
platform = "linux/arm64"
"#,
        )
        .unwrap();
        assert_eq!(config.image_names(), ["api", "web"]);
        let path = Path::new("cachectl.toml");
        let api = config.select(path, "api").unwrap();
        assert_eq!(api.base.image.as_deref(), Some("reg/api-base"));
        assert_eq!(api.base.builder.as_deref(), Some("native"));
        assert_eq!(api.base.platform.as_deref(), Some("linux/amd64"));
        // A map is a field like any other: replaced, not merged.
        assert_eq!(api.base.args.unwrap().keys().collect::<Vec<_>>(), ["B"]);
        assert_eq!(api.app.workdir.as_deref(), Some("/srv"));
        assert_eq!(api.selected.unwrap().dir, Some(PathBuf::from("backend")));
        let web = config.select(path, "web").unwrap();
        assert_eq!(web.base.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(web.base.args.unwrap()["A"], "1");
        let error = config.select(path, "db").unwrap_err().to_string();
        assert!(error.contains("api, web"), "{error}");
        let outside = parse("[images.x]\ndir = \"../elsewhere\"\n").unwrap();
        assert!(outside.select(path, "x").is_err());
        assert!(parse("[images.x]\nbse = {}\n").is_err());
    }

    #[test]
    fn a_missing_optional_file_is_empty() {
        let config = load(Path::new("/nonexistent/cachectl.toml"), false).unwrap();
        assert!(config.base.image.is_none());
        assert!(load(Path::new("/nonexistent/cachectl.toml"), true).is_err());
    }
}
