//! `cachectl history`: the deploys of the app image's tag, newest first,
//! from its deploy tags (see [`crate::image::deploys`]): time, digest, the
//! base key and base digest its labels name, and which one the tag points
//! at now. With a cache server, each is matched to its deploy event, which
//! adds whether the base was a hit and how long the deploy took.

use serde::Serialize;

use super::context::{records_for, registry_for};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::client::records::RecordStore;
use crate::exit::Failure;
use crate::image::deploys::{self, DeployTag};
use crate::image::inventory::{self, BASE_DIGEST_LABEL, ManifestInfo};
use crate::image::{ImageError, Location, Registry};

/// One deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Deploy {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Its deploy tag.
    pub tag: String,
    /// The image's manifest digest.
    pub digest: String,
    /// Pullable reference.
    pub reference: String,
    /// The base key its labels name.
    pub base_key: Option<String>,
    /// The base manifest its labels name.
    pub base_digest: Option<String>,
    /// Whether the app tag points at this deploy now (the newest deploy of
    /// the current digest).
    pub current: bool,
    /// From the deploy event: whether the base was a hit (`build`) or the
    /// app layer was reused (`layer`).
    pub hit: Option<bool>,
    /// From the deploy event: its wall time.
    pub seconds: Option<f64>,
}

/// The history of one app tag.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The app image and tag.
    pub image: String,
    /// The digest the tag points at now.
    pub current: Option<String>,
    /// Newest first.
    pub deploys: Vec<Deploy>,
}

/// The labels of an image, or of an index's first child.
fn labels_of<'a>(
    digest: &str,
    manifests: &'a std::collections::HashMap<String, ManifestInfo>,
) -> Option<&'a ManifestInfo> {
    let info = manifests.get(digest)?;
    match info.children.first() {
        Some(child) => manifests.get(child),
        None => Some(info),
    }
}

/// The deploys of `app`'s tag, newest first, at most `limit`.
pub async fn history(
    registry: &Registry,
    app: &Location,
    limit: usize,
) -> Result<History, ImageError> {
    let current = app.resolve(registry).await?;
    let mut deploys: Vec<(DeployTag, String)> = deploys::list(registry, app).await?;
    deploys.truncate(limit);
    let manifests =
        inventory::manifests(registry, app, deploys.iter().map(|(_, d)| d.clone())).await?;
    let mut seen_current = false;
    let deploys = deploys
        .into_iter()
        .map(|(deploy, digest)| {
            let info = labels_of(&digest, &manifests);
            let label = |name: &str| info.and_then(|info| info.labels.get(name).cloned());
            let is_current = !seen_current && current.as_deref() == Some(digest.as_str());
            seen_current |= is_current;
            Deploy {
                time: deploy.time(),
                reference: app.pinned(&digest),
                tag: deploy.tag,
                base_key: label(crate::builder::native::KEY_LABEL),
                base_digest: label(BASE_DIGEST_LABEL),
                current: is_current,
                digest,
                hit: None,
                seconds: None,
            }
        })
        .collect();
    Ok(History {
        image: app.tagged(),
        current,
        deploys,
    })
}

/// Adds what the cache server's deploy events say: for each deploy, the
/// `build` or `layer` event of the same image and digest nearest in time.
async fn add_events(records: &RecordStore, history: &mut History) {
    let Some(client) = records.client() else {
        return;
    };
    let request = client
        .request(
            reqwest::Method::GET,
            &format!("{}?limit=1000", cache_proto::routes::EVENTS),
        )
        .timeout(std::time::Duration::from_secs(5));
    let events: cache_proto::body::EventList = match client.send_ok(request, "events").await {
        Ok(response) => match response.json().await {
            Ok(events) => events,
            Err(error) => {
                eprintln!("warning: the cache server's events are unreadable: {error}");
                return;
            }
        },
        Err(error) => {
            eprintln!("warning: {error}; the history goes without the deploy events");
            return;
        }
    };
    for deploy in &mut history.deploys {
        let at_ms = DeployTag::parse(&deploy.tag).map_or(0, |tag| tag.at_ms as i64);
        let event = events
            .events
            .iter()
            .filter(|stored| {
                stored.event.image == history.image
                    && stored.event.digest.as_deref() == Some(deploy.digest.as_str())
                    && stored.event.kind != "ensure-base"
            })
            .min_by_key(|stored| (stored.at_ms - at_ms).abs());
        if let Some(stored) = event {
            deploy.hit = Some(stored.event.hit);
            deploy.seconds = Some(stored.event.seconds);
        }
    }
}

/// Runs `history`.
pub async fn run(
    cli: &Cli,
    file: &ConfigFile,
    limit: usize,
    app: &AppFlags,
) -> Result<(), Failure> {
    let settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    let registry = registry_for(cli, settings.image.registry_host().map(str::to_owned));
    let records = records_for(cli, file)?;
    let mut history = history(&registry, &settings.image, limit)
        .await
        .map_err(|e| Failure::new(e.exit(), e))?;
    add_events(&records, &mut history).await;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&history).map_err(Failure::failed)?
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<19} {:<16} {:<6} {:>7}",
        "TIME", "DIGEST", "BASE KEY", "BASE", "SECONDS"
    );
    for deploy in &history.deploys {
        let short = |text: &Option<String>, len: usize| {
            text.as_deref()
                .map(|t| t.get(..len).unwrap_or(t).to_owned())
                .unwrap_or_else(|| "-".into())
        };
        let base = match deploy.hit {
            Some(true) => "hit",
            Some(false) => "built",
            None => "-",
        };
        let seconds = deploy
            .seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "{:<24} {:<19} {:<16} {base:<6} {seconds:>7}{}",
            deploy.time,
            deploy.digest.get(..19).unwrap_or(&deploy.digest),
            short(&deploy.base_key, 16),
            if deploy.current { "  <- current" } else { "" }
        );
    }
    if history.deploys.is_empty() {
        eprintln!(
            "no deploys of {} recorded (each push by `cachectl build` or `layer` adds one)",
            history.image
        );
    }
    Ok(())
}
