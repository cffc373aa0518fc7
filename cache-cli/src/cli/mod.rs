//! The command line: flags (each with a `CACHECTL_*` variable where it
//! makes sense), [`config`] (`cachectl.toml`) and [`settings`] (their merge
//! into the settings each command works with).
//!
//! Every argument has an explicit `id` that is unique across the global
//! flags and every subcommand's: clap stores a value under its id, so two
//! arguments sharing one (as `--image` and `--app-image` once did) would
//! receive each other's values. `tests::argument_ids_are_unique` keeps it so.

pub mod config;
pub mod namespace;
pub mod settings;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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

    /// Audience of the CI job's OIDC ID token to present to the cache server
    /// instead of a token, where no --cache-token is given: on GitHub
    /// Actions (with `permissions: id-token: write`) cachectl requests it.
    #[arg(long, env = "CACHECTL_OIDC_AUDIENCE", global = true)]
    pub oidc_audience: Option<String>,

    /// PEM file of CA certificates to trust for an `https://` cache server
    /// (a private CA or the server's self-signed certificate), besides the
    /// system's.
    #[arg(long, env = "CACHECTL_CACERT", global = true)]
    pub cacert: Option<PathBuf>,

    /// Cache namespace of this run's entries and records (e.g. main, pr-42)
    /// [default: from the CI system (GitHub Actions, GitLab CI), else the
    /// server's; with an ID token as cache token, the server's rules
    /// choose]. Outside main, bases are tagged base-{key16}-{namespace}.
    #[arg(long, env = "CACHECTL_NAMESPACE", global = true)]
    pub namespace: Option<String>,

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

    /// In a project of several images ([images.NAME]), the images to work
    /// on (repeatable or comma-separated) [default: all of them, for build
    /// and ensure-base; other commands need exactly one].
    #[arg(
        long,
        env = "CACHECTL_ONLY",
        value_name = "NAME",
        value_delimiter = ',',
        global = true
    )]
    pub only: Vec<String>,

    #[allow(missing_docs)] // clap would turn a doc comment into help text
    #[command(flatten)]
    pub base: BaseFlags,

    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,

    /// Whether the configuration file was named (`--config`, in any form,
    /// or `CACHECTL_CONFIG`): then it must exist.
    #[arg(skip)]
    pub config_named: bool,
}

impl Cli {
    /// Parses the process's arguments (and variables); exits with clap's
    /// message and code 2 on a usage error.
    pub fn parse_args() -> Self {
        Self::parse_from_args(std::env::args_os())
    }

    /// Parses `args` (the program name first) like [`Cli::parse_args`].
    pub fn parse_from_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().get_matches_from(args);
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        cli.config_named = !matches!(
            matches.value_source("config"),
            None | Some(ValueSource::DefaultValue)
        );
        cli
    }

    /// The global and `[base]` flags of this run as arguments, to give a
    /// child `cachectl` the same settings (`cachectl bench` runs `build`).
    /// Secrets are not among them: see [`Cli::forwarded_env`].
    pub fn forwarded_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |flag: &str, value: Option<OsString>| {
            if let Some(value) = value {
                // `--flag=value`: a value that starts with `-` stays a value.
                let mut arg = OsString::from(format!("--{flag}="));
                arg.push(value);
                args.push(arg);
            }
        };
        let text = |value: &Option<String>| value.clone().map(OsString::from);
        let path = |value: &Option<PathBuf>| value.clone().map(OsString::from);
        if self.config_named {
            option("config", Some(self.config.clone().into()));
        }
        option("cache", text(&self.cache));
        option("namespace", text(&self.namespace));
        option("oidc-audience", text(&self.oidc_audience));
        option("cacert", path(&self.cacert));
        option("cache-dir", path(&self.cache_dir));
        option("registry-user", text(&self.registry_user));
        for host in &self.insecure_registry {
            option("insecure-registry", Some(host.into()));
        }
        for name in &self.only {
            option("only", Some(name.into()));
        }
        let base = &self.base;
        option("image", text(&base.image));
        for manifest in &base.manifests {
            option("manifest", Some(manifest.into()));
        }
        option("builder", text(&base.builder));
        option("dockerfile", text(&base.dockerfile));
        option("from", text(&base.from));
        option("install", text(&base.install));
        option("install-in", text(&base.install_in));
        option("capture", text(&base.capture));
        option("package-layers", text(&base.package_layers));
        option("max-layers", base.max_layers.map(|n| n.to_string().into()));
        for pair in &base.build_args {
            option("build-arg", Some(pair.into()));
        }
        option("platform", text(&base.platform));
        option("tag", text(&base.tag));
        option("upstream", text(&base.upstream));
        for arg in &base.builder_args {
            option("builder-arg", Some(arg.into()));
        }
        if self.require_cache {
            args.push("--require-cache".into());
        }
        args
    }

    /// The secrets of this run as the variables a child `cachectl` reads,
    /// so that they never appear on a command line.
    pub fn forwarded_env(&self) -> Vec<(&'static str, String)> {
        [
            ("CACHECTL_CACHE_TOKEN", &self.cache_token),
            ("CACHECTL_REGISTRY_PASSWORD", &self.registry_password),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
        .collect()
    }
}

/// `[base]` fields as flags.
#[derive(Debug, Args)]
pub struct BaseFlags {
    /// Base image repository, or oci:DIR[:NAME] for a local OCI layout.
    #[arg(
        id = "base.image",
        value_name = "IMAGE",
        long = "image",
        env = "CACHECTL_BASE_IMAGE",
        global = true
    )]
    pub image: Option<String>,
    /// Manifest glob (repeatable; replaces the file's list).
    #[arg(
        id = "base.manifests",
        value_name = "MANIFEST",
        long = "manifest",
        env = "CACHECTL_BASE_MANIFESTS",
        value_delimiter = ',',
        global = true
    )]
    pub manifests: Vec<String>,
    /// native, docker, buildah or podman.
    #[arg(
        id = "base.builder",
        value_name = "BUILDER",
        long = "builder",
        env = "CACHECTL_BASE_BUILDER",
        global = true
    )]
    pub builder: Option<String>,
    /// Dockerfile of the base (docker, buildah, podman).
    #[arg(
        id = "base.dockerfile",
        value_name = "DOCKERFILE",
        long = "dockerfile",
        env = "CACHECTL_BASE_DOCKERFILE",
        global = true
    )]
    pub dockerfile: Option<String>,
    /// Image the native builder starts from.
    #[arg(
        id = "base.from",
        value_name = "FROM",
        long = "from",
        env = "CACHECTL_BASE_FROM",
        global = true
    )]
    pub from: Option<String>,
    /// Native install command; {out} is the folder that becomes the layer.
    #[arg(
        id = "base.install",
        value_name = "INSTALL",
        long = "install",
        env = "CACHECTL_BASE_INSTALL",
        global = true
    )]
    pub install: Option<String>,
    /// Where the native install step runs: image (inside the from image's
    /// userland) or host [default: image with a from image of the host's
    /// architecture, else host].
    #[arg(
        id = "base.install_in",
        value_name = "WHERE",
        long = "install-in",
        env = "CACHECTL_INSTALL_IN",
        global = true
    )]
    pub install_in: Option<String>,
    /// What becomes the native layer: out (what the step wrote under {out})
    /// or changes (everything it changed in the from image) [default: out].
    #[arg(
        id = "base.capture",
        value_name = "WHAT",
        long = "capture",
        env = "CACHECTL_CAPTURE",
        global = true
    )]
    pub capture: Option<String>,
    /// Package layers for a pip install step: on (a layer per package and a
    /// glue layer, so a bump rebuilds one package) or off (one layer)
    /// [default: on].
    #[arg(
        id = "base.package_layers",
        value_name = "ON|OFF",
        long = "package-layers",
        env = "CACHECTL_PACKAGE_LAYERS",
        global = true
    )]
    pub package_layers: Option<String>,
    /// With package layers: at most N layers in the base image, the from
    /// image's and the glue included [default: 100].
    #[arg(
        id = "base.max_layers",
        value_name = "N",
        long = "max-layers",
        env = "CACHECTL_MAX_LAYERS",
        global = true
    )]
    pub max_layers: Option<usize>,
    /// Build argument NAME=VALUE (repeatable; added to the file's).
    #[arg(
        id = "base.build_args",
        value_name = "NAME=VALUE",
        long = "build-arg",
        global = true
    )]
    pub build_args: Vec<String>,
    /// Target platform os/arch[/variant] [default: the host's]; `layer` also takes
    /// `all` to put the app on every platform of an index base.
    #[arg(
        id = "base.platform",
        value_name = "PLATFORM",
        long = "platform",
        env = "CACHECTL_BASE_PLATFORM",
        global = true
    )]
    pub platform: Option<String>,
    /// Moving tag pushed with every new base (e.g. latest).
    #[arg(
        id = "base.tag",
        value_name = "TAG",
        long = "tag",
        env = "CACHECTL_BASE_TAG",
        global = true
    )]
    pub tag: Option<String>,
    /// track: a new image under an upstream tag (FROM, --from) makes a new
    /// base, at one manifest request per tag; pin: only the references as
    /// written count [default: track].
    #[arg(
        id = "base.upstream",
        value_name = "POLICY",
        long = "upstream",
        env = "CACHECTL_UPSTREAM",
        global = true
    )]
    pub upstream: Option<String>,
    /// Option added to the docker, buildah or podman build command
    /// (repeatable, e.g. --builder-arg=--network=host; replaces the file's
    /// builder_args; the variable is split at spaces). Not part of the key.
    #[arg(
        id = "base.builder_args",
        value_name = "ARG",
        long = "builder-arg",
        env = "CACHECTL_BUILDER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true,
        global = true
    )]
    pub builder_args: Vec<String>,
}

/// `[app]` fields as flags.
#[derive(Debug, Args)]
pub struct AppFlags {
    /// Target repository[:tag] of the app image.
    #[arg(
        id = "app.image",
        value_name = "IMAGE",
        long = "app-image",
        env = "CACHECTL_APP_IMAGE"
    )]
    pub image: Option<String>,
    /// Folder packed as the app layer [default: the project root].
    #[arg(
        id = "app.context",
        value_name = "CONTEXT",
        long = "context",
        env = "CACHECTL_APP_CONTEXT"
    )]
    pub context: Option<String>,
    /// Where the app goes in the image [default: /app].
    #[arg(
        id = "app.dest",
        value_name = "DEST",
        long = "dest",
        env = "CACHECTL_APP_DEST"
    )]
    pub dest: Option<String>,
    /// Pattern left out of the layer (repeatable; added to .dockerignore and the file's).
    #[arg(id = "app.exclude", value_name = "EXCLUDE", long = "exclude")]
    pub exclude: Vec<String>,
    /// Command, one argument per flag (replaces the file's).
    #[arg(id = "app.cmd", value_name = "CMD", long = "cmd")]
    pub cmd: Vec<String>,
    /// Entrypoint, one argument per flag (replaces the file's).
    #[arg(id = "app.entrypoint", value_name = "ENTRYPOINT", long = "entrypoint")]
    pub entrypoint: Vec<String>,
    /// Environment NAME=VALUE (repeatable; merged over the file's).
    #[arg(id = "app.env", value_name = "NAME=VALUE", long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(
        id = "app.workdir",
        value_name = "WORKDIR",
        long = "workdir",
        env = "CACHECTL_APP_WORKDIR"
    )]
    pub workdir: Option<String>,
    /// User.
    #[arg(
        id = "app.user",
        value_name = "USER",
        long = "user",
        env = "CACHECTL_APP_USER"
    )]
    pub user: Option<String>,
    /// Port the app listens on, as EXPOSE names it: 8000, 8000/tcp, 53/udp
    /// (repeatable; added to the file's).
    #[arg(id = "app.expose", value_name = "PORT", long = "expose")]
    pub expose: Vec<String>,
    /// Label NAME=VALUE (repeatable; merged over the file's).
    #[arg(id = "app.labels", value_name = "NAME=VALUE", long = "label")]
    pub labels: Vec<String>,
    /// Layer compression: gzip or zstd (zstd needs an OCI base).
    #[arg(
        id = "app.compression",
        value_name = "COMPRESSION",
        long = "compression",
        env = "CACHECTL_APP_COMPRESSION"
    )]
    pub compression: Option<String>,
    /// Compression level (gzip 0-9, default 1; zstd 1-22, default 3).
    #[arg(
        id = "app.compression_level",
        value_name = "COMPRESSION_LEVEL",
        long = "compression-level",
        env = "CACHECTL_APP_COMPRESSION_LEVEL"
    )]
    pub compression_level: Option<i32>,
    /// App layers: `changes` (the default: a layer of what changed since
    /// the last deploy, on its layers), or `one` (the whole app each time).
    #[arg(
        id = "app.layers",
        value_name = "LAYERS",
        long = "app-layers",
        env = "CACHECTL_APP_LAYERS"
    )]
    pub layers: Option<String>,
    /// Delta layers kept on the full one before the app is one layer again
    /// (default 8).
    #[arg(
        id = "app.max_deltas",
        value_name = "N",
        long = "app-max-deltas",
        env = "CACHECTL_APP_MAX_DELTAS"
    )]
    pub max_deltas: Option<usize>,
    /// Share of the app's bytes the delta layers may hold before the app is
    /// one layer again (default 0.25).
    #[arg(
        id = "app.max_delta_share",
        value_name = "SHARE",
        long = "app-max-delta-share",
        env = "CACHECTL_APP_MAX_DELTA_SHARE"
    )]
    pub max_delta_share: Option<f64>,
}

impl AppFlags {
    /// These flags as arguments, but for the image and the context (which
    /// `cachectl bench` sets itself for each run).
    pub fn forwarded_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |flag: &str, value: &str| args.push(format!("--{flag}={value}").into());
        let singles = [
            ("app-layers", &self.layers),
            ("app-max-deltas", &self.max_deltas.map(|n| n.to_string())),
            (
                "app-max-delta-share",
                &self.max_delta_share.map(|share| share.to_string()),
            ),
            ("dest", &self.dest),
            ("workdir", &self.workdir),
            ("user", &self.user),
            ("compression", &self.compression),
        ];
        for (flag, value) in singles {
            if let Some(value) = value {
                option(flag, value);
            }
        }
        let lists = [
            ("exclude", &self.exclude),
            ("cmd", &self.cmd),
            ("entrypoint", &self.entrypoint),
            ("env", &self.env),
            ("expose", &self.expose),
            ("label", &self.labels),
        ];
        for (flag, values) in lists {
            for value in values {
                option(flag, value);
            }
        }
        if let Some(level) = self.compression_level {
            option("compression-level", &level.to_string());
        }
        args
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look at the project (pip, Poetry, uv, Pipenv, npm, pnpm, Yarn,
    /// Bundler, Go, Cargo, Maven, Gradle) and write a commented
    /// cachectl.toml, and a Dockerfile.base when --builder needs one. Takes
    /// --image, --builder, --from, --install, --manifest, --platform and
    /// --app-image as the values to write.
    Init {
        /// Write over an existing configuration file.
        #[arg(long)]
        force: bool,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `cachectl completions bash >
    /// /etc/bash_completion.d/cachectl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of cachectl and its commands into a folder,
    /// e.g. `cachectl man /usr/local/share/man/man1`.
    Man {
        /// The folder.
        dir: PathBuf,
    },
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
    /// Blobs in the cache server's CAS, by BLAKE3 digest: put a file, get
    /// it back verified.
    Cas {
        /// put or get.
        #[command(subcommand)]
        action: CasCommand,
    },
    /// Delete the deploy tags and base tags nothing needs any more (a dry
    /// run unless --delete): keeps the last deploys of each app tag, those
    /// younger than --keep-days, every base a kept image uses, and the base
    /// of the current inputs.
    Gc {
        /// Deploys kept per app tag.
        #[arg(long, default_value_t = 10)]
        keep_deploys: usize,
        /// Deploys younger than this many days are kept too.
        #[arg(long, default_value_t = 7.0)]
        keep_days: f64,
        /// Delete (without it, only list what would go).
        #[arg(long)]
        delete: bool,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// List the deploys of the app image's tag, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
    },
    /// Point the app image's tag back at an earlier deploy, uploading
    /// nothing.
    Rollback {
        /// A digest, a deploy tag, or N (the Nth earlier image); default:
        /// the newest deploy of another image than the current one.
        #[arg(long)]
        to: Option<String>,
        #[allow(missing_docs)]
        #[command(flatten)]
        app: AppFlags,
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

/// `cachectl cas` subcommands.
#[derive(Debug, Subcommand)]
pub enum CasCommand {
    /// Upload a file (unless the server has it) and print its BLAKE3 digest.
    Put {
        /// The file.
        file: PathBuf,
    },
    /// Download a blob by digest, verified, to a file or stdout.
    Get {
        /// Its BLAKE3 digest (64 lowercase hex).
        digest: String,
        /// Write it here (atomically) instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of `command`'s arguments, with those of its subcommands.
    fn ids_below(command: &clap::Command, into: &mut Vec<(String, String)>) {
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments() {
                into.push((sub.get_name().to_owned(), arg.get_id().to_string()));
            }
            ids_below(sub, into);
        }
    }

    #[test]
    fn argument_ids_are_unique() {
        // Regression: `--app-image` and the global `--image` shared the id
        // `image`, so `build --app-image REG/repo:tag` set the base image.
        let command = Cli::command();
        let globals: Vec<String> = command
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .collect();
        let mut below = Vec::new();
        ids_below(&command, &mut below);
        for (sub, id) in &below {
            assert!(
                !globals.contains(id),
                "`{sub}` has an argument with the id `{id}` of a global flag"
            );
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn app_image_and_base_image_land_in_their_own_fields() {
        let cli = Cli::parse_from_args([
            "cachectl",
            "build",
            "--app-image",
            "127.0.0.1:5000/acme/web:v1",
            "--image",
            "127.0.0.1:5000/acme/base",
        ]);
        let Command::Build { app, .. } = &cli.command else {
            panic!("not build: {:?}", cli.command);
        };
        assert_eq!(app.image.as_deref(), Some("127.0.0.1:5000/acme/web:v1"));
        assert_eq!(cli.base.image.as_deref(), Some("127.0.0.1:5000/acme/base"));
        let cli = Cli::parse_from_args(["cachectl", "build", "--app-image", "reg/web:v1"]);
        assert_eq!(cli.base.image, None);
    }

    #[test]
    fn a_named_configuration_file_is_noticed_in_every_form() {
        for args in [
            &["cachectl", "--config", "x.toml", "hash"][..],
            &["cachectl", "--config=x.toml", "hash"],
            &["cachectl", "hash", "--config=x.toml"],
        ] {
            let cli = Cli::parse_from_args(args);
            assert!(cli.config_named, "{args:?}");
            assert_eq!(cli.config, PathBuf::from("x.toml"));
        }
        let cli = Cli::parse_from_args(["cachectl", "hash"]);
        assert!(!cli.config_named || std::env::var_os("CACHECTL_CONFIG").is_some());
    }

    #[test]
    fn forwarded_arguments_give_a_child_the_same_settings() {
        let cli = Cli::parse_from_args([
            "cachectl",
            "--config=c.toml",
            "--cache",
            "http://cache:8080",
            "--cache-token",
            "secret-token",
            "--cacert",
            "ca.pem",
            "--cache-dir",
            "/tmp/cd",
            "--namespace",
            "pr-42",
            "--oidc-audience",
            "https://cache.acme.test",
            "--require-cache",
            "--registry-user",
            "u",
            "--registry-password",
            "secret-password",
            "--insecure-registry",
            "a:5000,b:5000",
            "--only",
            "api",
            "--image",
            "reg/base",
            "--manifest",
            "a.txt",
            "--manifest",
            "b/*.txt",
            "--builder",
            "native",
            "--dockerfile",
            "D",
            "--from",
            "reg/py:3",
            "--install",
            "pip install -t {out}",
            "--install-in",
            "host",
            "--capture",
            "out",
            "--package-layers",
            "off",
            "--max-layers",
            "60",
            "--build-arg",
            "A=1",
            "--platform",
            "linux/amd64",
            "--tag",
            "latest",
            "--upstream",
            "pin",
            "--builder-arg=--network=host",
            "--builder-arg",
            "--pull=never",
            "bench",
            "--runs",
            "1",
            "--app-image",
            "reg/web:v1",
            "--dest",
            "/srv",
            "--exclude",
            "*.log",
            "--cmd",
            "run",
            "--cmd=--fast",
            "--env",
            "A=b",
            "--label",
            "x=y",
            "--workdir",
            "/srv",
            "--user",
            "app",
            "--compression",
            "zstd",
            "--compression-level",
            "5",
        ]);
        let Command::Bench { app, .. } = &cli.command else {
            panic!("not bench");
        };
        // Every global flag is forwarded (or set by each run, like --json):
        // a new one must be added to forwarded_args and counted here.
        assert_eq!(Cli::command().get_arguments().count(), 28);
        let forwarded = cli.forwarded_args();
        assert!(
            !forwarded
                .iter()
                .any(|arg| arg.to_string_lossy().contains("secret")),
            "a secret on the command line: {forwarded:?}"
        );
        let mut child: Vec<OsString> = vec!["cachectl".into()];
        child.extend(forwarded);
        child.push("build".into());
        child.extend(app.forwarded_args());
        let mut again = Cli::parse_from_args(child);
        for (name, value) in cli.forwarded_env() {
            match name {
                "CACHECTL_CACHE_TOKEN" => again.cache_token = Some(value),
                _ => again.registry_password = Some(value),
            }
        }
        assert_eq!(format!("{:?}", again.base), format!("{:?}", cli.base));
        let same = |cli: &Cli| {
            format!(
                "{:?}",
                (
                    &cli.config,
                    cli.config_named,
                    &cli.cache,
                    &cli.cache_token,
                    &cli.cacert,
                    &cli.cache_dir,
                    &cli.namespace,
                    &cli.oidc_audience,
                    cli.require_cache,
                    &cli.registry_user,
                    &cli.registry_password,
                    (&cli.insecure_registry, &cli.only),
                )
            )
        };
        assert_eq!(same(&again), same(&cli));
        let Command::Build { app: child_app, .. } = &again.command else {
            panic!("not build");
        };
        assert_eq!(child_app.image, None);
        assert_eq!(child_app.context, None);
        let strip = |flags: &AppFlags| {
            let mut text = format!("{flags:?}");
            text = text.replace(&format!("image: {:?}, ", flags.image), "");
            text
        };
        assert_eq!(strip(child_app), strip(app));
    }
}
