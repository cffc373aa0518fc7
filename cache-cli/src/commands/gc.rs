//! `cachectl gc`: deletes the deploy tags and base tags nothing needs any
//! more, in the base image's and the app image's repositories (or OCI
//! layouts). A dry run unless `--delete`; see [`crate::image::retention`]
//! for what is kept.
//!
//! Deleting a manifest in a registry only unlinks it: the registry's own
//! garbage collection (`registry garbage-collect`, a retention policy)
//! reclaims the blobs. In an OCI layout cachectl removes the blobs itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::base_key;
use super::context::{records_for, registry_for};
use super::ensure_base::base_hosts;
use super::errors::EnsureError;
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::exit::Failure;
use crate::image::retention::{self, Plan, Policy, Repo};
use crate::image::{ImageError, Location, Registry, inventory};
use crate::report::bytes::human_bytes;

/// What `gc` keeps, from its flags.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Deploys kept per app tag.
    pub keep_deploys: usize,
    /// Deploys younger than this are kept too.
    pub keep_for: Duration,
    /// Delete (else only say what would go).
    pub delete: bool,
}

/// Inventories `location`'s repository.
async fn inventory(registry: &Registry, location: &Location) -> Result<Repo, ImageError> {
    let tags = inventory::tags(registry, location).await?;
    let manifests =
        inventory::manifests(registry, location, tags.iter().map(|(_, d)| d.clone())).await?;
    Ok(Repo {
        name: location.name(),
        tags,
        manifests,
    })
}

/// Deletes manifest `digest` of `location`.
async fn delete(registry: &Registry, location: &Location, digest: &str) -> Result<(), ImageError> {
    match location {
        Location::Registry(reference) => Ok(registry.delete_manifest(reference, digest).await?),
        Location::Layout { layout, .. } => Ok(layout.remove_digest(digest)?),
    }
}

fn print_plan(plan: &Plan, deleted: bool) {
    println!(
        "{:<7} {:<44} {:<19} {:>9}  WHY",
        "ACTION", "TAG", "DIGEST", "SIZE"
    );
    for decision in &plan.decisions {
        let action = match (decision.delete, deleted) {
            (true, true) => "deleted",
            (true, false) => "delete",
            (false, _) => "keep",
        };
        let digest = decision.digest.get(..19).unwrap_or(&decision.digest);
        println!(
            "{action:<7} {:<44} {digest:<19} {:>9}  {}",
            format!("{}:{}", short_name(&decision.repository), decision.tag),
            human_bytes(decision.bytes),
            decision.reason
        );
    }
}

/// The repository's last path part, to keep the table narrow.
fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Runs `gc`.
pub async fn run(
    cli: &Cli,
    file: &ConfigFile,
    options: Options,
    app: &AppFlags,
) -> Result<(), Failure> {
    let base_settings = cli.base_settings(file).map_err(Failure::usage)?;
    let app_settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    let upstreams = base_settings.upstreams().map_err(EnsureError::from)?;
    let hosts = base_hosts(&base_settings, &upstreams)
        .into_iter()
        .chain(app_settings.image.registry_host().map(str::to_owned));
    let registry = registry_for(cli, hosts);
    let records = records_for(cli, file)?;

    // The base of the current inputs is kept even before an app uses it.
    let current = base_key::current(
        &base_settings,
        &upstreams,
        &records,
        &registry,
        cli.require_cache,
    )
    .await?;
    for warning in &current.warnings {
        eprintln!("warning: {warning}");
    }
    let mut current_base_tags = vec![base_settings.base_tag(&current.base.key)];
    current_base_tags.extend(base_settings.trusted_base_tag(&current.base.key));

    let base_location = base_settings
        .image
        .at("latest")
        .map_err(|e| Failure::new(e.exit(), e))?;
    let app_location = app_settings.image.clone();
    let image_failure = |e: ImageError| Failure::new(e.exit(), e);
    let mut repos = vec![
        inventory(&registry, &base_location)
            .await
            .map_err(image_failure)?,
    ];
    let app_repo = if app_location.name() == base_location.name() {
        0
    } else {
        repos.push(
            inventory(&registry, &app_location)
                .await
                .map_err(image_failure)?,
        );
        1
    };
    let locations = [&base_location, &app_location];
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let policy = Policy {
        keep_deploys: options.keep_deploys,
        keep_for_ms: options.keep_for.as_millis() as u64,
        now_ms,
        current_base_tags,
    };
    let plan = retention::plan(&repos, 0, app_repo, &policy);

    let mut freed_on_disk = 0;
    if options.delete {
        for (repo, digest) in &plan.deletions {
            delete(&registry, locations[*repo], digest)
                .await
                .map_err(image_failure)?;
        }
        for location in locations {
            if let Location::Layout { layout, .. } = location {
                freed_on_disk += layout
                    .collect_garbage()
                    .map_err(|e| image_failure(e.into()))?;
            }
        }
    }
    let tags_deleted = plan.decisions.iter().filter(|d| d.delete).count();
    if cli.json {
        let value = serde_json::json!({
            "dry_run": !options.delete,
            "decisions": plan.decisions,
            "tags_deleted": if options.delete { tags_deleted } else { 0 },
            "manifests_deleted": if options.delete { plan.deletions.len() } else { 0 },
            "freed_bytes": plan.freed_bytes,
            "layout_bytes_removed": freed_on_disk,
        });
        println!("{value}");
        return Ok(());
    }
    print_plan(&plan, options.delete);
    let registries = locations
        .iter()
        .any(|location| matches!(location, Location::Registry(_)));
    if options.delete {
        eprintln!(
            "deleted {tags_deleted} tags ({} manifests); up to {} of blobs are unreferenced now",
            plan.deletions.len(),
            human_bytes(plan.freed_bytes)
        );
        if registries {
            eprintln!(
                "the registry reclaims them in its own garbage collection (docker-registry: \
                 `registry garbage-collect CONFIG`, with pushes stopped; never \
                 `--delete-untagged`, which deletes the untagged platform images of \
                 multi-platform images and the signatures and SBOMs attached to kept ones; \
                 GHCR, Docker Hub, ECR, Harbor: docs/cachectl.md, \"After gc\")"
            );
        }
    } else {
        eprintln!(
            "dry run: {tags_deleted} tags ({} manifests, up to {}) would be deleted; \
             run `cachectl gc --delete` to delete them",
            plan.deletions.len(),
            human_bytes(plan.freed_bytes)
        );
    }
    Ok(())
}
