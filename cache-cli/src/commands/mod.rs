//! The subcommands, one module each, named after the command: what runs
//! when a user types `cachectl NAME`. [`run`] dispatches; a [`Failure`]
//! carries the exit code: 0 ok, 1 build failed, 2 usage or configuration
//! error, 3 cache or registry unreachable (or refusing our credentials)
//! when it is needed.

pub mod app_tree;
pub mod base_key;
pub mod bench;
pub mod build;
pub mod cache;
pub mod cas;
pub mod completions;
pub mod ensure_base;
pub mod gc;
pub mod hash;
pub mod history;
pub mod images;
pub mod init;
pub mod layer;
pub mod man;
pub mod rollback;

use crate::builder::BuildError;
use crate::cli::config::ConfigFile;
use crate::cli::{Cli, Command};
use crate::client::records::RecordStore;
use crate::client::{CacheClient, identity};
use crate::image::registry::parse_reference;
use crate::image::{ImageError, Registry, RegistryError};

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code: 1, 2 or 3.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// `error`, exiting with `code`.
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(2, error)
    }

    /// Any other failure (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self::new(1, error)
    }
}

/// The exit code of a registry failure: 3 when it could not be reached or
/// refused our credentials, else 1.
pub fn registry_code(error: &RegistryError) -> u8 {
    match error {
        RegistryError::Unreachable { .. } | RegistryError::Auth { .. } => 3,
        RegistryError::Other { .. } => 1,
    }
}

/// The exit code of an image (registry or layout) failure.
pub fn image_code(error: &ImageError) -> u8 {
    match error {
        ImageError::Registry(error) => registry_code(error),
        ImageError::Layout(_) => 1,
    }
}

/// The exit code of a build failure.
pub fn build_code(error: &BuildError) -> u8 {
    match error {
        BuildError::Registry(error) => registry_code(error),
        BuildError::RegistryUnreachable { .. } => 3,
        _ => 1,
    }
}

/// Runs the command `cli` names.
pub async fn run(mut cli: Cli) -> Result<(), Failure> {
    // Commands that need no configuration file.
    match &cli.command {
        Command::Init { force, app } => return init::run(&cli, *force, app).await,
        Command::Completions { shell } => return completions::run(*shell),
        Command::Man { dir } => return man::run(dir),
        _ => {}
    }
    let file = match images::narrow(&cli, cli.load_file().map_err(Failure::usage)?)? {
        images::Narrowed::One(file) => *file,
        images::Narrowed::Several(names) => return images::run_each(&cli, &names).await,
    };
    if cli.cache_token.is_none()
        && cli.cache_url(&file).is_some()
        && let Some(audience) = cli
            .oidc_audience
            .as_deref()
            .or(file.oidc_audience.as_deref())
    {
        cli.cache_token = ci_id_token(audience, cli.require_cache).await?;
    }
    match &cli.command {
        Command::EnsureBase { force, wait } => {
            ensure_base::run(&cli, &file, ensure_base::Flags::new(*force, *wait)).await
        }
        Command::Layer { base, app } => layer::run(&cli, &file, base, app).await,
        Command::Build { force, wait, app } => {
            build::run(&cli, &file, ensure_base::Flags::new(*force, *wait), app).await
        }
        Command::Init { force, app } => init::run(&cli, *force, app).await,
        Command::Completions { shell } => completions::run(*shell),
        Command::Man { dir } => man::run(dir),
        Command::Hash { explain } => hash::run(&cli, &file, *explain).await,
        Command::Gc {
            keep_deploys,
            keep_days,
            delete,
            app,
        } => {
            let options = gc::Options {
                keep_deploys: *keep_deploys,
                keep_for: std::time::Duration::from_secs_f64(keep_days * 86_400.0),
                delete: *delete,
            };
            gc::run(&cli, &file, options, app).await
        }
        Command::History { limit, app } => history::run(&cli, &file, *limit, app).await,
        Command::Rollback { to, app } => rollback::run(&cli, &file, to.as_deref(), app).await,
        Command::Cache { action } => cache::run(&cli, &file, action).await,
        Command::Cas { action } => cas::run(&cli, &file, action).await,
        Command::Bench {
            runs,
            keep,
            plot,
            app,
        } => {
            let options = bench::Options {
                runs: *runs as usize,
                keep: *keep,
                plot: plot.as_deref(),
            };
            bench::run(&cli, &file, options, app).await
        }
    }
}

/// The CI job's ID token for `audience`, to present to the cache. Without
/// one (not on GitHub Actions, or the job may not request ID tokens) the
/// run goes on without a token, unless the cache is required.
async fn ci_id_token(audience: &str, required: bool) -> Result<Option<String>, Failure> {
    match identity::github_id_token(audience).await {
        Ok(Some(token)) => Ok(Some(token)),
        Ok(None) if required => Err(Failure::new(
            3,
            anyhow::anyhow!(
                "--oidc-audience is set but this job offers no ID token \
                 (on GitHub Actions, grant `permissions: id-token: write`; on GitLab CI, \
                 declare `id_tokens: CACHECTL_CACHE_TOKEN: aud: ...` instead)"
            ),
        )),
        Ok(None) => {
            tracing::warn!(
                "--oidc-audience is set but this job offers no ID token; going on without a cache token"
            );
            Ok(None)
        }
        Err(error) if required => Err(Failure::new(3, error)),
        Err(error) => {
            tracing::warn!("{error}; going on without a cache token");
            Ok(None)
        }
    }
}

/// Where records live for this run: the cache server, else local files.
pub fn records_for(cli: &Cli, file: &ConfigFile) -> Result<RecordStore, Failure> {
    Ok(match cli.cache_url(file) {
        Some(url) => {
            let roots = cli.extra_roots().map_err(Failure::usage)?;
            let namespace = cli.cache_namespace(file).map_err(Failure::usage)?;
            let client =
                CacheClient::new(&url, cli.cache_token.as_deref(), roots).in_namespace(namespace);
            RecordStore::server(client)
        }
        None => RecordStore::local(cli.records_dir()),
    })
}

/// A registry session for `cli` that knows `hosts` (registry hosts such
/// as `registry.example.com:5000`).
pub fn registry_for(cli: &Cli, hosts: impl IntoIterator<Item = String>) -> Registry {
    let hosts: Vec<String> = hosts.into_iter().collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    Registry::new(cli.registry_settings(), &hosts)
}

/// The registry host of a repository or reference (`docker.io` when it
/// names none), by the one reference parser; `None` if it does not parse.
pub fn host_of(reference: &str) -> Option<String> {
    parse_reference(reference)
        .ok()
        .map(|reference| reference.registry().to_owned())
}
