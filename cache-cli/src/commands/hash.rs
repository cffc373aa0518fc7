//! `cachectl hash [--explain]`: the base key of the current inputs, the
//! inputs it is computed from, and what changed since the last recorded
//! base of the image.

use super::{Failure, records_for};
use crate::cli::Cli;
use crate::cli::config::ConfigFile;
use crate::client::records::{BaseRecord, latest_key};
use crate::key::diff;

/// Prints the key on stdout (the inputs and changes on stderr), or all of
/// it as JSON.
pub async fn run(cli: &Cli, file: &ConfigFile, explain: bool) -> Result<(), Failure> {
    let settings = cli.base_settings(file).map_err(Failure::usage)?;
    let records = records_for(cli, file)?;
    let base = settings.key().map_err(Failure::usage)?;
    let changes = if explain {
        let latest = latest_key(&settings.image.describe());
        match records.get::<BaseRecord>(&latest).await {
            Ok(Some(previous)) => Some(diff(&previous.inputs, &base.inputs)),
            Ok(None) => None,
            Err(error) if cli.require_cache => return Err(Failure::new(3, error)),
            Err(error) => {
                eprintln!("warning: {error}");
                None
            }
        }
    } else {
        None
    };
    if cli.json {
        let value = serde_json::json!({
            "key": base.key,
            "inputs": base.inputs,
            "changed": changes,
        });
        println!("{value}");
        return Ok(());
    }
    println!("{}", base.key);
    for input in &base.inputs {
        eprintln!("  {}  {input}", &input.hash[..16]);
    }
    match changes {
        Some(changes) if changes.is_empty() => eprintln!("unchanged since the last recorded base"),
        Some(changes) => {
            eprintln!("changed since the last recorded base:");
            for change in changes {
                eprintln!("  {change}");
            }
        }
        None if explain => eprintln!("no base recorded yet for this image"),
        None => {}
    }
    Ok(())
}
