//! Command-line flags (each with a `CACHECTL_*` variable) and their merge
//! with `cachectl.toml` into the program's own settings types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::AppSettings;
use crate::build::BuilderKind;
use crate::config::{self, ConfigError, ConfigFile};
use crate::ensure::BaseSettings;
use crate::image::oci::Platform;
use crate::image::{ImageTarget, Location, RegistrySettings};
use crate::key::Recipe;
use crate::layer::Compression;

/// Rebuild and push the base image only when its dependency manifests change.
#[derive(Debug, Parser)]
#[command(name = "cachectl", version)]
pub struct Cli {
    /// Project configuration file; its folder is the project root.
    #[arg(
        long,
        env = "CACHECTL_CONFIG",
        default_value = "cachectl.toml",
        global = true
    )]
    pub config: PathBuf,

    /// Cache server URL (overrides `cache` in the file).
    #[arg(long, env = "CACHECTL_CACHE", global = true)]
    pub cache: Option<String>,

    /// Token for the cache server (`cache-server token create --scope write`);
    /// sent as a bearer token, never printed.
    #[arg(
        long,
        env = "CACHECTL_CACHE_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub cache_token: Option<String>,

    /// PEM file of CA certificates to trust for an `https://` cache server
    /// (a private CA or the server's self-signed certificate), besides the
    /// system's.
    #[arg(long, env = "CACHECTL_CACERT", global = true)]
    pub cacert: Option<PathBuf>,

    /// Folder of local records when no cache server is configured.
    #[arg(long, env = "CACHECTL_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Fail (exit 3) when the cache is unreachable instead of going on without it.
    #[arg(long, env = "CACHECTL_REQUIRE_CACHE", global = true)]
    pub require_cache: bool,

    /// Registry username (else ~/.docker/config.json and credential helpers).
    #[arg(long, env = "CACHECTL_REGISTRY_USER", global = true)]
    pub registry_user: Option<String>,

    /// Registry password.
    #[arg(
        long,
        env = "CACHECTL_REGISTRY_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub registry_password: Option<String>,

    /// Registries (host[:port]) to speak plain HTTP to; loopback ones always are.
    #[arg(
        long,
        env = "CACHECTL_INSECURE_REGISTRY",
        value_delimiter = ',',
        global = true
    )]
    pub insecure_registry: Vec<String>,

    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    #[allow(missing_docs)] // clap would turn a doc comment into help text
    #[command(flatten)]
    pub base: BaseFlags,

    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// `[base]` fields as flags.
#[derive(Debug, Args)]
pub struct BaseFlags {
    /// Base image repository, or oci:DIR[:NAME] for a local OCI layout.
    #[arg(long, env = "CACHECTL_BASE_IMAGE", global = true)]
    pub image: Option<String>,
    /// Manifest glob (repeatable; replaces the file's list).
    #[arg(
        long = "manifest",
        env = "CACHECTL_BASE_MANIFESTS",
        value_delimiter = ',',
        global = true
    )]
    pub manifests: Vec<String>,
    /// native, docker, buildah or podman.
    #[arg(long, env = "CACHECTL_BASE_BUILDER", global = true)]
    pub builder: Option<String>,
    /// Dockerfile of the base (docker, buildah, podman).
    #[arg(long, env = "CACHECTL_BASE_DOCKERFILE", global = true)]
    pub dockerfile: Option<String>,
    /// Image the native builder starts from.
    #[arg(long, env = "CACHECTL_BASE_FROM", global = true)]
    pub from: Option<String>,
    /// Native install command; {out} is the folder that becomes the layer.
    #[arg(long, env = "CACHECTL_BASE_INSTALL", global = true)]
    pub install: Option<String>,
    /// Build argument NAME=VALUE (repeatable; added to the file's).
    #[arg(long = "build-arg", global = true)]
    pub build_args: Vec<String>,
    /// Target platform os/arch[/variant] [default: the host's]; `layer` also takes
    /// `all` to put the app on every platform of an index base.
    #[arg(long, env = "CACHECTL_BASE_PLATFORM", global = true)]
    pub platform: Option<String>,
    /// Moving tag pushed with every new base (e.g. latest).
    #[arg(long, env = "CACHECTL_BASE_TAG", global = true)]
    pub tag: Option<String>,
}

/// `[app]` fields as flags.
#[derive(Debug, Args)]
pub struct AppFlags {
    /// Target repository[:tag] of the app image.
    #[arg(long = "app-image", env = "CACHECTL_APP_IMAGE")]
    pub image: Option<String>,
    /// Folder packed as the app layer [default: the project root].
    #[arg(long, env = "CACHECTL_APP_CONTEXT")]
    pub context: Option<String>,
    /// Where the app goes in the image [default: /app].
    #[arg(long, env = "CACHECTL_APP_DEST")]
    pub dest: Option<String>,
    /// Pattern left out of the layer (repeatable; added to .dockerignore and the file's).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Command, one argument per flag (replaces the file's).
    #[arg(long = "cmd")]
    pub cmd: Vec<String>,
    /// Entrypoint, one argument per flag (replaces the file's).
    #[arg(long = "entrypoint")]
    pub entrypoint: Vec<String>,
    /// Environment NAME=VALUE (repeatable; merged over the file's).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long, env = "CACHECTL_APP_WORKDIR")]
    pub workdir: Option<String>,
    /// User.
    #[arg(long, env = "CACHECTL_APP_USER")]
    pub user: Option<String>,
    /// Label NAME=VALUE (repeatable; merged over the file's).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Layer compression: gzip or zstd (zstd needs an OCI base).
    #[arg(long, env = "CACHECTL_APP_COMPRESSION")]
    pub compression: Option<String>,
    /// Compression level (gzip 0-9, default 1; zstd 1-22, default 3).
    #[arg(long, env = "CACHECTL_APP_COMPRESSION_LEVEL")]
    pub compression_level: Option<i32>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the base key and the inputs it is computed from.
    Hash {
        /// Also say what changed since the last recorded base of the image.
        #[arg(long)]
        explain: bool,
    },
    /// Put the app folder on a base image as one layer and push it.
    Layer {
        /// The base image reference (repository@digest or repository:tag).
        #[arg(long)]
        base: String,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// ensure-base, then layer on the base it printed.
    Build {
        /// Build and push the base even when one exists.
        #[arg(long)]
        force: bool,
        /// How long to wait for another job building the same base.
        #[arg(long, env = "CACHECTL_WAIT", default_value = "30m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// Measure the deploy step of this project: cold, app change, no change.
    Bench {
        /// Runs per scenario.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// Keep the images pushed under the cachectl-bench tag.
        #[arg(long)]
        keep: bool,
        /// Also draw the phases as stacked bars per scenario into this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// Content-addressed folder caches for CI (node_modules, .venv, target/):
    /// only the files the server lacks are uploaded or downloaded.
    Cache {
        /// save or restore.
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Print the base image for the current inputs, building it on a miss.
    EnsureBase {
        /// Build and push even when a base exists.
        #[arg(long)]
        force: bool,
        /// How long to wait for another job building the same base (e.g. 90s, 30m).
        #[arg(long, env = "CACHECTL_WAIT", default_value = "30m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

/// `cachectl cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Upload the folder's files the server lacks and record the folder
    /// under the key (and as the newest of --name).
    Save(FolderFlags),
    /// Restore the folder: the exact key, else the newest save of --name
    /// (a partial hit), downloading only what is not already there.
    Restore(FolderFlags),
}

/// What a folder cache is.
#[derive(Debug, Clone, Args)]
pub struct FolderFlags {
    /// The cache's name, e.g. npm; also what a partial restore falls back on.
    #[arg(long)]
    pub name: String,
    /// Files whose content decides the key (repeatable or comma-separated).
    #[arg(long = "key-files", value_delimiter = ',', required = true)]
    pub key_files: Vec<PathBuf>,
    /// The folder to save or restore.
    #[arg(long)]
    pub path: PathBuf,
    /// Leave out what this pattern matches when saving (repeatable).
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Extra text in the key, e.g. a tool version.
    #[arg(long, default_value = "")]
    pub key_extra: String,
}

fn field(path: &str, field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        path: path.to_owned(),
        field,
        message: message.into(),
    }
}

fn pairs(
    path: &str,
    field_name: &'static str,
    pairs: &[String],
) -> Result<Vec<(String, String)>, ConfigError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| field(path, field_name, format!("{pair:?} is not NAME=VALUE")))
        })
        .collect()
}

impl Cli {
    /// Merges the app flags over `[app]` into [`AppSettings`].
    pub fn app_settings(
        &self,
        file: &ConfigFile,
        flags: &AppFlags,
    ) -> Result<AppSettings, ConfigError> {
        let path = self.config.display().to_string();
        let app = &file.app;
        let root = config::project_root(&self.config);
        let image = flags
            .image
            .clone()
            .or_else(|| app.image.clone())
            .ok_or_else(|| {
                field(
                    &path,
                    "app.image",
                    "missing (set it in [app] or with --app-image / CACHECTL_APP_IMAGE)",
                )
            })?;
        let image =
            Location::parse(&image, &root).map_err(|e| field(&path, "app.image", e.to_string()))?;
        let context = root.join(
            flags
                .context
                .clone()
                .or_else(|| app.context.clone())
                .unwrap_or_else(|| ".".into()),
        );
        let dest = flags
            .dest
            .clone()
            .or_else(|| app.dest.clone())
            .unwrap_or_else(|| "/app".into());
        if !dest.starts_with('/') {
            return Err(field(
                &path,
                "app.dest",
                format!("{dest:?} must be an absolute path"),
            ));
        }
        let mut exclude = app.exclude.clone().unwrap_or_default();
        exclude.extend(flags.exclude.iter().cloned());
        let list = |flag: &Vec<String>, file: &Option<Vec<String>>| {
            if flag.is_empty() {
                file.clone()
            } else {
                Some(flag.clone())
            }
        };
        let mut env = app.env.clone().unwrap_or_default();
        env.extend(pairs(&path, "app.env", &flags.env)?);
        let mut labels = app.labels.clone().unwrap_or_default();
        labels.extend(pairs(&path, "app.labels", &flags.labels)?);
        let platform_text = self
            .base
            .platform
            .clone()
            .or_else(|| file.base.platform.clone());
        let all_platforms = platform_text.as_deref() == Some("all");
        let platform = match platform_text {
            Some(text) if text != "all" => {
                Platform::parse(&text).map_err(|m| field(&path, "base.platform", m))?
            }
            _ => Platform::host(),
        };
        let level = flags.compression_level.or(app.compression_level);
        let compression = match flags
            .compression
            .clone()
            .or_else(|| app.compression.clone())
            .as_deref()
        {
            None | Some("gzip") => Compression::Gzip(level.unwrap_or(1).clamp(0, 9) as u32),
            Some("zstd") => Compression::Zstd(level.unwrap_or(3).clamp(1, 22)),
            Some(other) => {
                return Err(field(
                    &path,
                    "app.compression",
                    format!("{other:?} is not gzip or zstd"),
                ));
            }
        };
        Ok(AppSettings {
            tree_cache: Some(self.cachectl_dir().join("trees")),
            all_platforms,
            compression,
            image,
            context,
            dest,
            exclude,
            cmd: list(&flags.cmd, &app.cmd),
            entrypoint: list(&flags.entrypoint, &app.entrypoint),
            env,
            workdir: flags.workdir.clone().or_else(|| app.workdir.clone()),
            user: flags.user.clone().or_else(|| app.user.clone()),
            labels,
            platform,
        })
    }

    /// Reads the configuration file (required when named explicitly).
    pub fn load_file(&self) -> Result<ConfigFile, ConfigError> {
        let explicit = std::env::args_os().any(|arg| arg == "--config")
            || std::env::var_os("CACHECTL_CONFIG").is_some();
        config::load(&self.config, explicit)
    }

    /// The cache server URL, if any.
    pub fn cache_url(&self, file: &ConfigFile) -> Option<String> {
        self.cache
            .clone()
            .or_else(|| file.cache.clone())
            .filter(|url| !url.is_empty())
    }

    /// The certificates of `--cacert`, none without it.
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, ConfigError> {
        let Some(path) = &self.cacert else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: &str| ConfigError::Field {
            path: path.display().to_string(),
            field: "cacert",
            message: message.to_owned(),
        };
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| invalid("not a PEM certificate bundle"))?;
        if certificates.is_empty() {
            return Err(invalid("no PEM certificate in the file"));
        }
        Ok(certificates)
    }

    /// Where local records go.
    pub fn records_dir(&self) -> PathBuf {
        self.cachectl_dir().join("records")
    }

    /// The local cache folder: `--cache-dir`, else `$XDG_CACHE_HOME/cachectl`
    /// or `~/.cache/cachectl`.
    pub fn cachectl_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            home.join("cachectl")
        })
    }

    /// Registry connection settings.
    pub fn registry_settings(&self) -> RegistrySettings {
        RegistrySettings {
            user: self.registry_user.clone(),
            password: self.registry_password.clone(),
            insecure: self.insecure_registry.clone(),
        }
    }

    /// Merges flags over the file into [`BaseSettings`].
    pub fn base_settings(&self, file: &ConfigFile) -> Result<BaseSettings, ConfigError> {
        let path = self.config.display().to_string();
        let base = &file.base;
        let flags = &self.base;
        let root = config::project_root(&self.config);

        let image = flags
            .image
            .clone()
            .or_else(|| base.image.clone())
            .ok_or_else(|| {
                field(
                    &path,
                    "base.image",
                    "missing (set it in [base] or with --image / CACHECTL_BASE_IMAGE)",
                )
            })?;
        let mut image = ImageTarget::parse(&image).map_err(|m| field(&path, "base.image", m))?;
        if let ImageTarget::Layout { dir, .. } = &mut image
            && dir.is_relative()
        {
            *dir = root
                .join(&*dir)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
        }

        let manifests = if flags.manifests.is_empty() {
            base.manifests.clone().unwrap_or_default()
        } else {
            flags.manifests.clone()
        };
        if manifests.is_empty() {
            return Err(field(
                &path,
                "base.manifests",
                "at least one manifest pattern is needed",
            ));
        }

        let builder_name = flags.builder.clone().or_else(|| base.builder.clone());
        let builder = BuilderKind::parse(builder_name.as_deref().unwrap_or("native"))
            .map_err(|m| field(&path, "base.builder", m))?;
        let recipe = match builder {
            BuilderKind::Native => {
                let install = flags
                    .install
                    .clone()
                    .or_else(|| base.install.clone())
                    .ok_or_else(|| {
                        field(
                            &path,
                            "base.install",
                            "the native builder needs an install command",
                        )
                    })?;
                let from = flags
                    .from
                    .clone()
                    .or_else(|| base.from.clone())
                    .filter(|f| !f.is_empty());
                Recipe::Native { from, install }
            }
            _ => {
                let dockerfile = flags
                    .dockerfile
                    .clone()
                    .or_else(|| base.dockerfile.clone())
                    .unwrap_or_else(|| "Dockerfile".into());
                Recipe::Dockerfile(PathBuf::from(dockerfile))
            }
        };

        let mut args = base.args.clone().unwrap_or_default();
        for pair in &flags.build_args {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                field(
                    &path,
                    "base.args",
                    format!("--build-arg {pair:?} is not NAME=VALUE"),
                )
            })?;
            args.insert(name.to_owned(), value.to_owned());
        }

        let platform = match flags.platform.clone().or_else(|| base.platform.clone()) {
            Some(text) => Platform::parse(&text).map_err(|m| field(&path, "base.platform", m))?,
            None => Platform::host(),
        };

        let context = PathBuf::from(base.context.clone().unwrap_or_else(|| ".".into()));
        Ok(BaseSettings {
            root,
            context,
            image,
            manifests,
            builder,
            recipe,
            args: args.into_iter().collect::<BTreeMap<_, _>>(),
            platform,
            tag: flags.tag.clone().or_else(|| base.tag.clone()),
        })
    }
}
