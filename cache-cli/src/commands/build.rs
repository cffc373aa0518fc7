//! `cachectl build`: `ensure-base`, then `layer` on the base it printed, in
//! one process and one registry session.

use std::path::Path;

use super::app_tree::AppTree;
use super::ensure_base::{self, Flags};
use super::layer::{BASE_KEY_LABEL, layer, tag_deploy};
use super::{Failure, records_for};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::image::Location;
use crate::image::registry::Registry;
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
    // One registry session (and its tokens) for both halves. The app's tree
    // is hashed, and a changed app's upload sessions opened, while the base
    // is ensured.
    let app_host = settings.image.registry_host();
    let tree = AppTree::start(&settings)?;
    let ahead = async |registry: &Registry| tree.open_uploads_ahead(registry, &settings).await;
    let (base, registry) =
        ensure_base::ensure_alongside(cli, file, &records, flags, app_host, ahead).await?;
    let layered = async {
        settings
            .labels
            .insert(BASE_KEY_LABEL.to_owned(), base.key.clone());
        let base_location =
            Location::parse(&base.reference, Path::new("")).map_err(Failure::failed)?;
        Ok::<_, Failure>(
            layer(
                &registry,
                Some(&records),
                &base_location,
                &settings,
                Some(&tree),
            )
            .await?,
        )
    };
    let mut report = match layered.await {
        Ok(report) => report,
        Err(error) => {
            registry.cancel_uploads_ahead().await;
            return Err(error);
        }
    };
    tokio::join!(
        tag_deploy(&registry, &settings, &mut report),
        registry.cancel_uploads_ahead()
    );
    output::report_build(&base, &report, cli.json).map_err(Failure::failed)?;
    records
        .report_event(&events::from_build(&base, &report))
        .await;
    Ok(())
}
