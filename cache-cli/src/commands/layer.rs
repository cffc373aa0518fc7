//! `cachectl layer`: the app folder as one reproducible layer on top of a
//! base image, pushed straight to the registry with no daemon (the work is
//! [`crate::app_image`]'s).

use std::path::Path;

use super::context::{records_for, registry_for};
use crate::app_image::{AppTree, layer_and_tag};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::exit::Failure;
use crate::image::Location;
use crate::report::{events, output};

/// `cachectl layer --base REF`: the app on `base`, pushed; prints the
/// app image's reference (or its report).
pub async fn run(cli: &Cli, file: &ConfigFile, base: &str, app: &AppFlags) -> Result<(), Failure> {
    let settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    // Relative layout folders stay relative to the working directory.
    let base = Location::parse(base, Path::new("")).map_err(Failure::usage)?;
    let hosts = [&base, &settings.image]
        .into_iter()
        .filter_map(Location::registry_host)
        .map(str::to_owned);
    let registry = registry_for(cli, hosts);
    let records = records_for(cli, file)?;
    let tree = AppTree::start(&settings)?;
    let report = layer_and_tag(&registry, &records, &base, &settings, &tree).await?;
    // The result first: the history is best effort, after it.
    output::report_layer(&report, cli.json).map_err(Failure::failed)?;
    records.report_event(&events::from_layer(&report)).await;
    Ok(())
}
