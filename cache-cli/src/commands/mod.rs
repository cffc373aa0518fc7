//! The subcommands, one module each, named after the command: what runs
//! when a user types `cachectl NAME`. [`run`] dispatches; a command returns
//! a [`Failure`](crate::exit::Failure) with its exit code. What every
//! command is given (the records store, a registry session) is in
//! [`context`], which no command's module imports back.

pub mod base_key;
pub mod bench;
pub mod build;
pub mod cache;
pub mod cas;
pub mod completions;
pub mod context;
pub mod ensure_base;
pub mod errors;
pub mod gc;
pub mod hash;
pub mod history;
pub mod images;
pub mod init;
pub mod layer;
pub mod man;
pub mod rollback;

use crate::cli::{Cli, Command};
use crate::client::identity;
use crate::exit::Failure;

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
        Ok(None) if required => Err(Failure::unreachable(anyhow::anyhow!(
            "--oidc-audience is set but this job offers no ID token \
                 (on GitHub Actions, grant `permissions: id-token: write`; on GitLab CI, \
                 declare `id_tokens: CACHECTL_CACHE_TOKEN: aud: ...` instead)"
        ))),
        Ok(None) => {
            tracing::warn!(
                "--oidc-audience is set but this job offers no ID token; going on without a cache token"
            );
            Ok(None)
        }
        Err(error) if required => Err(Failure::unreachable(error)),
        Err(error) => {
            tracing::warn!("{error}; going on without a cache token");
            Ok(None)
        }
    }
}
