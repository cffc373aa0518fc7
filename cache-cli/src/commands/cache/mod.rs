//! `cachectl cache save` and `cachectl cache restore`: keys, the record an
//! action-cache key points at, and the command; the two operations are
//! [`save`] and [`restore`].

mod folder;
mod restore;
mod save;

pub use folder::{FolderError, FolderRecord, FolderSettings, folder_key, latest_key, miss_report};
pub use restore::restore_folder;
pub use save::save;

use crate::cli::config::ConfigFile;
use crate::cli::{CacheCommand, Cli};
use crate::client::cas::Cas;
use crate::commands::context::records_for;
use crate::exit::Failure;
use crate::folder::restore::ContentStore;
use crate::image::oci::Platform;
use crate::report::output;

/// `cachectl cache save|restore`. The cache is an accelerator: an
/// unreachable server is a warning (a skipped save, a miss) unless
/// `--require-cache`.
pub async fn run(cli: &Cli, file: &ConfigFile, action: &CacheCommand) -> Result<(), Failure> {
    let flags = match action {
        CacheCommand::Save(flags) | CacheCommand::Restore(flags) => flags,
    };
    let records = records_for(cli, file)?;
    let Some(remote) = Cas::of(&records) else {
        return Err(Failure::usage(anyhow::anyhow!(
            "cachectl cache needs a cache server: --cache URL or `cache` in cachectl.toml"
        )));
    };
    let platform = match &cli.base.platform {
        Some(text) => Platform::parse(text)
            .map_err(|m| Failure::usage(anyhow::anyhow!("--platform: {m}")))?
            .to_string(),
        None => Platform::host().to_string(),
    };
    let settings = FolderSettings {
        name: flags.name.clone(),
        key_files: flags.key_files.clone(),
        path: flags.path.clone(),
        excludes: flags.excludes.clone(),
        key_extra: flags.key_extra.clone(),
        platform,
    };
    let failure = |error: FolderError| match error {
        FolderError::Usage(_) => Failure::usage(error),
        FolderError::Cache(_) if cli.require_cache => Failure::unreachable(error),
        FolderError::Cache(_)
        | FolderError::Read { .. }
        | FolderError::Restore(_)
        | FolderError::Incomplete { .. } => Failure::failed(error),
    };
    let store = ContentStore::new(cli.cachectl_dir().join("content"));
    match action {
        CacheCommand::Save(_) => match save(&settings, &records, &remote, &store).await {
            Ok(report) => output::report_folder_save(&report, cli.json),
            Err(FolderError::Cache(error)) if !cli.require_cache => {
                eprintln!("warning: the folder was not saved: {error}");
                Ok(())
            }
            Err(error) => return Err(failure(error)),
        },
        CacheCommand::Restore(_) => {
            match restore_folder(&settings, &records, &remote, &store).await {
                Ok(report) => output::report_folder_restore(&report, cli.json),
                Err(FolderError::Cache(error)) if !cli.require_cache => {
                    eprintln!("warning: nothing restored: {error}");
                    output::report_folder_restore(&miss_report(&settings), cli.json)
                }
                Err(error @ FolderError::Incomplete { .. }) => {
                    eprintln!("warning: {error}");
                    output::report_folder_restore(&miss_report(&settings), cli.json)
                }
                Err(error) => return Err(failure(error)),
            }
        }
    }
    .map_err(Failure::failed)
}
