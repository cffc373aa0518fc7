//! `cachectl build`: `ensure-base`, then `layer` on the base it printed, in
//! one process and one registry session.

use std::path::Path;

use super::ensure_base::{self, Flags};
use super::layer::{BASE_KEY_LABEL, layer, tag_deploy};
use super::{Failure, records_for};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::image::Location;
use crate::report::{events, output};

/// Runs `build`: prints the app image's reference (or both reports).
pub async fn run(
    cli: &Cli,
    file: &ConfigFile,
    flags: Flags,
    app: &AppFlags,
) -> Result<(), Failure> {
    let mut settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    let records = records_for(cli, file)?;
    // One registry session (and its tokens) for both halves.
    let app_host = settings.image.registry_host();
    let (base, registry) = ensure_base::ensure(cli, file, &records, flags, app_host).await?;
    settings
        .labels
        .insert(BASE_KEY_LABEL.to_owned(), base.key.clone());
    let base_location = Location::parse(&base.reference, Path::new("")).map_err(Failure::failed)?;
    let mut report = layer(&registry, Some(&records), &base_location, &settings).await?;
    tag_deploy(&registry, &settings, &mut report).await;
    output::report_build(&base, &report, cli.json).map_err(Failure::failed)?;
    records
        .report_event(&events::from_build(&base, &report))
        .await;
    Ok(())
}
