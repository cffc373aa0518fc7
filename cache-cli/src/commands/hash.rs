//! `cachectl hash [--explain]`: the base key of the current inputs, the
//! inputs it is computed from (upstream images with the digests they
//! resolve to), and what changed since the last recorded base of the image.

use super::base_key::{self, Current};
use super::context::{records_for, registry_for};
use super::ensure_base::base_hosts;
use super::errors::EnsureError;
use crate::cli::Cli;
use crate::cli::config::ConfigFile;
use crate::exit::Failure;
use crate::key::diff;

/// Prints the key on stdout (the inputs and changes on stderr), or all of
/// it as JSON.
pub async fn run(cli: &Cli, file: &ConfigFile, explain: bool) -> Result<(), Failure> {
    let settings = cli.base_settings(file).map_err(Failure::usage)?;
    let records = records_for(cli, file)?;
    let upstreams = settings.upstreams().map_err(EnsureError::from)?;
    let registry = registry_for(cli, base_hosts(&settings, &upstreams));
    let Current {
        base,
        previous,
        mut warnings,
        ..
    } = base_key::current(
        &settings,
        &upstreams,
        &records,
        &registry,
        cli.require_cache,
    )
    .await?;
    let previous = if explain {
        match previous {
            Some(previous) => previous,
            None => {
                base_key::previous_record(&settings, &records, cli.require_cache, &mut warnings)
                    .await?
            }
        }
    } else {
        None
    };
    let plan = previous
        .as_ref()
        .map(|previous| previous.plan.clone())
        .unwrap_or_default();
    let changes = previous.map(|previous| diff(&previous.inputs, &base.inputs));
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if cli.json {
        let value = serde_json::json!({
            "key": base.key,
            "inputs": base.inputs,
            "changed": changes,
            "plan": plan,
            "warnings": warnings,
        });
        println!("{value}");
        return Ok(());
    }
    println!("{}", base.key);
    for input in &base.inputs {
        match &input.value {
            Some(value) => eprintln!("  {}  {input}  {value}", &input.hash[..16]),
            None => eprintln!("  {}  {input}", &input.hash[..16]),
        }
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
    if !plan.is_empty() {
        eprintln!(
            "package plan of the last base (resolved in the image; a build resolves it again): {} packages",
            plan.len()
        );
        for entry in &plan {
            eprintln!("  {entry}");
        }
    }
    Ok(())
}
