//! `cachectl build`: `ensure-base`, then `layer` on the base it printed, in
//! one process and one registry session.

use std::path::Path;

use super::context::records_for;
use super::ensure_base::{BaseSession, Flags};
use crate::app_image::{AppTree, BASE_KEY_LABEL, layer_and_tag};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::exit::Failure;
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
    // One registry session (and its tokens) for both halves. The app's tree
    // is hashed, and a changed app's upload sessions opened, while the base
    // is ensured.
    let session = BaseSession::new(cli, file, settings.image.registry_host())?;
    let registry = session.registry();
    let tree = AppTree::start(&settings)?;
    let (base, ()) = tokio::join!(
        session.ensure(&records, flags),
        tree.open_uploads_ahead(registry, &settings)
    );
    let pushed = async {
        let base = base?;
        settings
            .labels
            .insert(BASE_KEY_LABEL.to_owned(), base.key.clone());
        let base_location =
            Location::parse(&base.reference, Path::new("")).map_err(Failure::failed)?;
        let report = layer_and_tag(registry, &records, &base_location, &settings, &tree).await?;
        Ok::<_, Failure>((base, report))
    };
    // Sessions opened ahead and not used go, whatever failed.
    let (base, report) = match pushed.await {
        Ok(pushed) => pushed,
        Err(failure) => {
            registry.cancel_uploads_ahead().await;
            return Err(failure);
        }
    };
    output::report_build(&base, &report, cli.json).map_err(Failure::failed)?;
    records
        .report_event(&events::from_build(&base, &report))
        .await;
    Ok(())
}
