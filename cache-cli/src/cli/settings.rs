//! The merge of flags, `CACHECTL_*` variables and `cachectl.toml` (flag >
//! variable > file) into the settings each command works with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cache_proto::Namespace;

use super::config::{self, ConfigError, ConfigFile};
use super::namespace::{NamespaceOrigin, RunNamespace};
use super::{AppFlags, Cli};
use crate::app_image::delta::Compaction;
use crate::builder::BuilderKind;
use crate::builder::step::{Capture, InstallIn};
use crate::image::config::ExposedPort;
use crate::image::oci::Platform;
use crate::image::{ImageTarget, Location, RegistrySettings, base_tag};
use crate::key::{self, BaseKey, KeyError, KeySpec, Recipe};
use crate::pack::layer::Compression;
use crate::packages::stack::DEFAULT_MAX_LAYERS;
use crate::packages::step::InstallStep;
use crate::upstream::{self, Resolved, Upstream, UpstreamError};

/// Everything `ensure-base` needs, resolved from config, flags and env.
#[derive(Debug, Clone)]
pub struct BaseSettings {
    /// Project root.
    pub root: PathBuf,
    /// Where the base goes.
    pub image: ImageTarget,
    /// Manifest glob patterns.
    pub manifests: Vec<String>,
    /// The builder.
    pub builder: BuilderKind,
    /// The recipe.
    pub recipe: Recipe,
    /// Build context of docker, buildah and podman, relative to the root.
    pub context: PathBuf,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// Target platform.
    pub platform: Platform,
    /// Optional moving tag.
    pub tag: Option<String>,
    /// The cache namespace of the run, if any: outside a trusted one, bases
    /// are tagged `base-{key16}-{namespace}`.
    pub namespace: Option<Namespace>,
    /// Whether the key follows the upstream images' digests.
    pub upstream: upstream::Policy,
    /// Options added to an external builder's build command.
    pub builder_args: Vec<String>,
    /// Folder of the `from` root filesystems the native builder unpacks.
    pub rootfs_cache: PathBuf,
}

impl BaseSettings {
    /// The namespace of the run when it is not a trusted one.
    fn untrusted_namespace(&self) -> Option<&Namespace> {
        self.namespace
            .as_ref()
            .filter(|namespace| !super::namespace::is_trusted(Some(namespace)))
    }

    /// The tag this run publishes the base of `key` under: `base-{key16}`
    /// in a trusted namespace, `base-{key16}-{namespace}` in another, so a
    /// trusted job never takes a pull request's base for its own.
    pub fn base_tag(&self, key: &cache_proto::Key) -> String {
        match self.untrusted_namespace() {
            Some(namespace) => format!("{}-{namespace}", base_tag(key)),
            None => base_tag(key),
        }
    }

    /// The trusted tag an untrusted run may also use (main's base of the
    /// same key); `None` in a trusted run.
    pub fn trusted_base_tag(&self, key: &cache_proto::Key) -> Option<String> {
        self.untrusted_namespace().map(|_| base_tag(key))
    }

    /// Whether the run may move the moving tag (`tag`): only a trusted one.
    pub fn may_move_tags(&self) -> bool {
        self.untrusted_namespace().is_none()
    }

    /// The upstream images of the recipe (resolved for the key under
    /// `track` only).
    pub fn upstreams(&self) -> Result<Vec<Upstream>, UpstreamError> {
        upstream::of_recipe(&self.root, &self.recipe, &self.args, &self.platform)
    }

    /// Computes the key of the current inputs, `upstreams` resolved.
    pub fn key(&self, upstreams: &[Resolved]) -> Result<BaseKey, KeyError> {
        let platform = self.platform.to_string();
        let upstreams: Vec<key::Input> = upstreams.iter().map(Resolved::input).collect();
        key::compute(&KeySpec {
            root: &self.root,
            manifests: &self.manifests,
            recipe: &self.recipe,
            args: &self.args,
            platform: &platform,
            upstreams: &upstreams,
        })
    }
}

/// What goes into the app layer and its config.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// Where the app image goes: `repository[:tag]` or `oci:DIR[:NAME]`.
    pub image: Location,
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
    /// Ports exposed beside the base's.
    pub expose: Vec<ExposedPort>,
    /// Labels merged over the base's.
    pub labels: BTreeMap<String, String>,
    /// Platform picked from a multi-platform base.
    pub platform: Platform,
    /// Layer compression.
    pub compression: Compression,
    /// With an image index as base: put the app on every platform's image
    /// and push a new index (`--platform all`).
    pub all_platforms: bool,
    /// Folder of the stat caches that let an unchanged context be
    /// recognised without reading its files; `None` reads them all.
    pub tree_cache: Option<PathBuf>,
    /// Whether each push is also tagged `TAG.deploy-TIME`.
    pub deploy_tags: bool,
    /// How the app is layered: `None` as one layer; with a compaction
    /// rule, by change.
    pub by_change: Option<Compaction>,
}

fn field(path: &str, field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        path: path.to_owned(),
        field,
        message: message.into(),
    }
}

/// The compaction rule of `[app] layers = "changes"`, from the bounds the
/// user set (each checked) and the defaults.
fn compaction(
    path: &str,
    max_deltas: Option<usize>,
    max_share: Option<f64>,
) -> Result<Compaction, ConfigError> {
    let default = Compaction::default();
    let max_deltas = max_deltas.unwrap_or(default.max_deltas);
    if max_deltas > Compaction::MOST_DELTAS {
        return Err(field(
            path,
            "app.max_deltas",
            format!(
                "{max_deltas} delta layers is more than {}: every layer is one more request for each pull",
                Compaction::MOST_DELTAS
            ),
        ));
    }
    let max_share = max_share.unwrap_or(default.max_share);
    if !(max_share > 0.0 && max_share <= 1.0) {
        return Err(field(
            path,
            "app.max_delta_share",
            format!("{max_share} is not a share above 0 and at most 1"),
        ));
    }
    Ok(Compaction {
        max_deltas,
        max_share,
    })
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
        let root = self.project_root(file);
        let image = flags
            .image
            .clone()
            .or_else(|| app.image.clone())
            .ok_or_else(|| {
                self.no_file_or(
                    field(
                        &path,
                        "app.image",
                        "missing (set it in [app] or with --app-image / CACHECTL_APP_IMAGE)",
                    ),
                    "--app-image / CACHECTL_APP_IMAGE",
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
        let mut expose = Vec::new();
        for port in app.expose.iter().flatten().chain(&flags.expose) {
            let port = ExposedPort::parse(port)
                .map_err(|invalid| field(&path, "app.expose", invalid.to_string()))?;
            if !expose.contains(&port) {
                expose.push(port);
            }
        }
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
            by_change: match flags.layers.as_deref().or(app.layers.as_deref()) {
                Some("one") => None,
                None | Some("changes") => Some(compaction(
                    &path,
                    flags.max_deltas.or(app.max_deltas),
                    flags.max_delta_share.or(app.max_delta_share),
                )?),
                Some(other) => {
                    return Err(field(
                        &path,
                        "app.layers",
                        format!("{other:?} is not changes or one"),
                    ));
                }
            },
            deploy_tags: match std::env::var("CACHECTL_DEPLOY_TAGS").ok().as_deref() {
                Some("false" | "0" | "off") => false,
                Some("true" | "1" | "on") => true,
                Some(other) => {
                    return Err(field(
                        "CACHECTL_DEPLOY_TAGS",
                        "app.deploy_tags",
                        format!("{other:?} is not true or false"),
                    ));
                }
                None => app.deploy_tags.unwrap_or(true),
            },
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
            expose,
            labels,
            platform,
        })
    }

    /// The folder the project's paths are relative to: the configuration
    /// file's, or the selected image's `dir` in it.
    pub fn project_root(&self, file: &ConfigFile) -> PathBuf {
        let root = config::project_root(&self.config);
        match file.selected.as_ref().and_then(|s| s.dir.as_ref()) {
            Some(dir) if root == Path::new(".") => dir.clone(),
            Some(dir) => root.join(dir),
            None => root,
        }
    }

    /// Reads the configuration file (required when named explicitly).
    pub fn load_file(&self) -> Result<ConfigFile, ConfigError> {
        config::load(&self.config, self.config_named)
    }

    /// The cache server URL, if any.
    pub fn cache_url(&self, file: &ConfigFile) -> Option<String> {
        self.cache
            .clone()
            .or_else(|| file.cache.clone())
            .filter(|url| !url.is_empty())
    }

    /// The cache namespace of this run and where it came from: `--namespace`
    /// / `CACHECTL_NAMESPACE`, the file's `namespace`, else the CI system's
    /// job (see [`super::namespace`]); `None` leaves it to the server.
    pub fn namespace(&self, file: &ConfigFile) -> Result<Option<RunNamespace>, ConfigError> {
        let path = self.config.display().to_string();
        let named = match (&self.namespace, &file.namespace) {
            (Some(flag), _) => Some((flag, "--namespace / CACHECTL_NAMESPACE".to_owned())),
            (None, Some(field)) => Some((field, format!("namespace in {path}"))),
            (None, None) => None,
        };
        if let Some((text, source)) = named {
            let namespace = Namespace::parse(text)
                .map_err(|e| self::field(&path, "namespace", e.to_string()))?;
            return Ok(Some(RunNamespace {
                namespace,
                origin: NamespaceOrigin::Named(source),
            }));
        }
        let Some(detected) = super::namespace::detect(&|name| std::env::var(name).ok()) else {
            return Ok(None);
        };
        if let Some(line) = &detected.distrusted {
            // Said once per run, however many parts of it ask.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| tracing::warn!("{line}"));
        }
        Ok(Some(RunNamespace {
            namespace: detected.namespace,
            origin: NamespaceOrigin::Detected(detected.why),
        }))
    }

    /// The namespace cachectl names to the cache server: the run's, except
    /// that a namespace detected from the CI job is not sent with an ID
    /// token. The server turns the token's verified claims into the job's
    /// namespace by its rules (a GitLab merge request's token carries its
    /// branch, not its number), and a rule's own namespace is the one the
    /// job may write; a namespace named on purpose is always sent.
    pub fn cache_namespace(&self, file: &ConfigFile) -> Result<Option<Namespace>, ConfigError> {
        let Some(run) = self.namespace(file)? else {
            return Ok(None);
        };
        let id_token = self
            .cache_token
            .as_deref()
            .is_some_and(cache_proto::credential::is_id_token);
        match run.origin {
            NamespaceOrigin::Detected(why) if id_token => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::info!(
                        "{why}: the cache server's rules choose the namespace of this job's ID token \
                         (detected {}; --namespace names one)",
                        run.namespace
                    )
                });
                Ok(None)
            }
            _ => Ok(Some(run.namespace)),
        }
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
            digest_cache: Some(self.cachectl_dir().join("digests")),
            known_layers: Some(self.cachectl_dir().join("layers")),
            pushed_trees: Some(self.cachectl_dir().join("pushed")),
        }
    }

    /// `error`, unless the configuration file does not exist: then the
    /// error says so, rather than naming a field of a file that is not
    /// there (`flags` names the flags that would do instead).
    fn no_file_or(&self, error: ConfigError, flags: &str) -> ConfigError {
        if self.config.exists() {
            return error;
        }
        let root = std::fs::canonicalize(config::project_root(&self.config))
            .unwrap_or_else(|_| config::project_root(&self.config));
        ConfigError::Missing {
            path: self.config.display().to_string(),
            folder: root.display().to_string(),
            flags: flags.to_owned(),
        }
    }

    /// Merges flags over the file into [`BaseSettings`].
    pub fn base_settings(&self, file: &ConfigFile) -> Result<BaseSettings, ConfigError> {
        let path = self.config.display().to_string();
        let base = &file.base;
        let flags = &self.base;
        let root = self.project_root(file);

        let image = flags
            .image
            .clone()
            .or_else(|| base.image.clone())
            .ok_or_else(|| {
                self.no_file_or(
                    field(
                        &path,
                        "base.image",
                        "missing (set it in [base] or with --image / CACHECTL_BASE_IMAGE)",
                    ),
                    "--image / CACHECTL_BASE_IMAGE",
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

        let platform = match flags.platform.clone().or_else(|| base.platform.clone()) {
            Some(text) => Platform::parse(&text).map_err(|m| field(&path, "base.platform", m))?,
            None => Platform::host(),
        };
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
                let install_in = match flags.install_in.as_deref().or(base.install_in.as_deref()) {
                    Some(text) => {
                        InstallIn::parse(text).map_err(|m| field(&path, "base.install_in", m))?
                    }
                    // A foreign platform's programs cannot run here (without
                    // an emulator the user opts into by naming `image`).
                    None if from.is_some()
                        && platform.architecture == Platform::host().architecture =>
                    {
                        InstallIn::Image
                    }
                    None => InstallIn::Host,
                };
                let capture = match flags.capture.as_deref().or(base.capture.as_deref()) {
                    Some(text) => {
                        Capture::parse(text).map_err(|m| field(&path, "base.capture", m))?
                    }
                    None => Capture::Out,
                };
                if capture == Capture::Changes && install_in != InstallIn::Image {
                    return Err(field(
                        &path,
                        "base.capture",
                        "\"changes\" captures what the step changed in the `from` image: it needs \
                         install_in = \"image\"",
                    ));
                }
                if install_in == InstallIn::Image && from.is_none() {
                    return Err(field(
                        &path,
                        "base.install_in",
                        "\"image\" needs a `from` image to install in",
                    ));
                }
                let wanted = match flags
                    .package_layers
                    .as_deref()
                    .or(base.package_layers.as_deref())
                {
                    None | Some("on") => true,
                    Some("off") => false,
                    Some(other) => {
                        return Err(field(
                            &path,
                            "base.package_layers",
                            format!("{other:?} is not on or off"),
                        ));
                    }
                };
                // Only a pip install into `{out}`, run in the image, whose
                // layer is what it wrote, can be taken apart.
                let package_layers =
                    (wanted && install_in == InstallIn::Image && capture == Capture::Out)
                        .then(|| InstallStep::recognise(&install))
                        .flatten();
                let max_layers = match flags.max_layers.or(base.max_layers) {
                    None => DEFAULT_MAX_LAYERS,
                    Some(n) if (3..=127).contains(&n) => n,
                    Some(n) => {
                        return Err(field(
                            &path,
                            "base.max_layers",
                            format!(
                                "{n} is not between 3 and 127 (registries and overlayfs break near 125)"
                            ),
                        ));
                    }
                };
                Recipe::Native {
                    from,
                    install,
                    install_in,
                    capture,
                    package_layers,
                    max_layers,
                }
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

        let context = PathBuf::from(base.context.clone().unwrap_or_else(|| ".".into()));
        let upstream = match flags.upstream.as_deref().or(base.upstream.as_deref()) {
            Some(text) => {
                upstream::Policy::parse(text).map_err(|m| field(&path, "base.upstream", m))?
            }
            None => upstream::Policy::default(),
        };
        let builder_args = if flags.builder_args.is_empty() {
            base.builder_args.clone().unwrap_or_default()
        } else {
            flags.builder_args.clone()
        };
        Ok(BaseSettings {
            rootfs_cache: self.cachectl_dir().join("rootfs"),
            builder_args,
            upstream,
            root,
            context,
            image,
            manifests,
            builder,
            recipe,
            args: args.into_iter().collect::<BTreeMap<_, _>>(),
            platform,
            tag: flags.tag.clone().or_else(|| base.tag.clone()),
            namespace: self.namespace(file)?.map(|run| run.namespace),
        })
    }
}
