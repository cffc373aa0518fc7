//! The app as a stack of layers that changes at its top (`[app] layers =
//! "changes"`): a deploy whose tree differs from the last deploy on the
//! same base pushes one layer of what changed (and whiteouts for what was
//! deleted) on that deploy's layers, which the target already holds. Past
//! the compaction bound the deltas become one, of everything changed since
//! the full layer (which stays: what never changes is not pushed again);
//! past the share too, or with nothing known, the app is one full layer.

use cache_proto::Key;

use serde::{Deserialize, Serialize};

use super::delta::{self, AppStack, Compaction, StackLayer, Step};
use super::error::LayerError;
use super::listing_store::{ListingRef, ListingStore};
use crate::cli::settings::AppSettings;
use crate::client::records::RecordStore;
use crate::image::Location;
use crate::image::registry::Registry;
use crate::pack::exclude::Excludes;
use crate::pack::layer::{self, PackOptions};
use crate::pack::tree::StatCache;

/// The key of the last deploy of `app` to `target` on the base of manifest
/// `base_digest`: what decides its layers' bytes (not the command or the
/// environment, which are the config's).
pub(super) fn stack_key(target: &Location, base_digest: &str, app: &AppSettings) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-app-stack/v1\0");
    for part in [
        target.name(),
        base_digest.to_owned(),
        app.dest.clone(),
        format!("{:?}", app.compression),
        layer::source_date_epoch().to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(b"\0");
    }
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// What this deploy's app layers are.
pub(super) struct Planned {
    /// The layers kept from the last deploy, bottom first.
    pub(super) kept: Vec<StackLayer>,
    /// The layer this deploy packed (a delta, or the full app), if any.
    pub(super) packed: Option<(layer::Layer, u64)>,
    /// The tree the layers make.
    listing: delta::Listing,
    /// The tree of the full layer, and where it is stored when it was.
    full: (delta::Listing, Option<ListingRef>),
    /// Whether the tree was listed (a name that is not UTF-8 is not).
    listed: bool,
    /// Whether a stack was rewritten: its deltas into one, or the whole
    /// app into one layer.
    pub(super) compacted: Option<Compacted>,
    /// The files and bytes of the delta, when this deploy packed one.
    pub(super) delta: Option<(usize, u64)>,
    /// Keeps the packed layer's staging folder.
    _staging: tempfile::TempDir,
}

impl Planned {
    /// Every app layer, bottom first.
    pub(super) fn layers(&self) -> Vec<StackLayer> {
        let mut layers = self.kept.clone();
        if let Some((packed, file_bytes)) = &self.packed {
            layers.push(StackLayer {
                digest: packed.digest.to_string(),
                diff_id: packed.diff_id.clone(),
                size: packed.size,
                file_bytes: *file_bytes,
            });
        }
        layers
    }
}

/// How a stack was rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compacted {
    /// Its deltas into one, on the full layer.
    Deltas,
    /// The whole app into one layer.
    App,
}

impl Compacted {
    /// As `--json` names it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Deltas => "deltas",
            Self::App => "app",
        }
    }
}

/// What is recorded of a deploy's stack: its layers, where the tree of the
/// full one is stored, and what the deltas changed from it.
#[derive(Debug, Serialize, Deserialize)]
struct StackRecord {
    /// Format version (2: the tree of the full layer stored apart).
    version: u32,
    /// The app's layers, the full one first.
    layers: Vec<StackLayer>,
    /// The tree of the full layer.
    full: ListingRef,
    /// What the deltas changed from it.
    changes: delta::Changes,
}

/// The last deploy's stack at `key`, when it can be built on: its record
/// is sound, the tree of its full layer is found, and a layout still has
/// its layers (a registry is not asked: it refuses a manifest naming a
/// layer it lacks, and the caller then deploys without the stack).
async fn last_stack(
    registry: &Registry,
    records: &RecordStore,
    trees: &ListingStore,
    target: &Location,
    key: &Key,
) -> Option<(AppStack, ListingRef)> {
    let record = match records.get::<StackRecord>(key).await {
        Ok(Some(record))
            if record.version == 2
                && !record.layers.is_empty()
                && delta::names_are_safe(record.changes.keys()) =>
        {
            record
        }
        Ok(_) => return None,
        Err(error) => {
            tracing::debug!(%error, "app stack record unreachable: one full layer");
            return None;
        }
    };
    let full = trees.get(&record.full).await?;
    if !delta::names_are_safe(full.keys()) {
        return None;
    }
    if let Location::Layout { .. } = target {
        for layer in &record.layers {
            if !target
                .has_blob(registry, &layer.digest)
                .await
                .unwrap_or(false)
            {
                return None;
            }
        }
    }
    let stack = AppStack {
        layers: record.layers,
        listing: delta::apply(&full, &record.changes),
        full,
    };
    Some((stack, record.full))
}

/// Plans and packs this deploy's app layers: on the last deploy's
/// (`on_last`, when they are known), else as one full layer.
pub(super) async fn plan(
    registry: &Registry,
    records: &RecordStore,
    target: &Location,
    key: &Key,
    app: &AppSettings,
    rule: Compaction,
    on_last: bool,
) -> Result<Planned, LayerError> {
    let pack_error = |source| LayerError::Pack {
        path: app.context.display().to_string(),
        source,
    };
    let excludes = Excludes::for_context(&app.context, &app.exclude)
        .map_err(|e| LayerError::Usage(e.into()))?;
    let (context, listing_excludes) = (app.context.clone(), excludes.clone());
    let tree_cache = app.tree_cache.clone();
    let trees = ListingStore::new(records, app.tree_cache.clone());
    let (listed, last) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            // The stat cache the tree's digest just used and saved.
            let mut cache = tree_cache.map(|dir| StatCache::load(&dir, &context));
            delta::listing(&context, &listing_excludes, cache.as_mut())
        }),
        async {
            match on_last {
                true => last_stack(registry, records, &trees, target, key).await,
                false => None,
            }
        }
    );
    let listing = listed
        .map_err(|e| pack_error(std::io::Error::other(e)))?
        .map_err(pack_error)?;
    let Some(listing) = listing else {
        // A name that is not UTF-8: packed whole, never recorded.
        let (packed, staging) = super::base::pack_app(app).await?;
        return Ok(Planned {
            kept: Vec::new(),
            packed: Some((packed, 0)),
            listing: delta::Listing::new(),
            full: (delta::Listing::new(), None),
            listed: false,
            compacted: None,
            delta: None,
            _staging: staging,
        });
    };
    let app_bytes = delta::app_bytes(&listing);
    let step = rule.step(last.as_ref().map(|(stack, _)| stack), &listing, app_bytes);
    let staging = tempfile::tempdir().map_err(pack_error)?;
    let (last, full_ref) = match (last, &step) {
        (Some(last), Step::Unchanged | Step::Delta(_) | Step::Squash(_)) => last,
        (last, _) => {
            let (packed, staging) = super::base::pack_app(app).await?;
            return Ok(Planned {
                kept: Vec::new(),
                packed: Some((packed, app_bytes)),
                full: (listing.clone(), None),
                listing,
                listed: true,
                compacted: last.map(|_| Compacted::App),
                delta: None,
                _staging: staging,
            });
        }
    };
    let (kept, change, compacted) = match step {
        Step::Delta(change) => (last.layers.clone(), change, None),
        Step::Squash(change) => (last.layers[..1].to_vec(), change, Some(Compacted::Deltas)),
        _ => (last.layers.clone(), delta::Delta::default(), None),
    };
    let planned = |packed, delta, staging| Planned {
        kept,
        packed,
        listing,
        full: (last.full, Some(full_ref)),
        listed: true,
        compacted,
        delta,
        _staging: staging,
    };
    if change.is_empty() {
        // The same tree, or the tree of the full layer again.
        return Ok(planned(None, None, staging));
    }
    let only: std::collections::BTreeSet<Vec<u8>> = change
        .entries
        .iter()
        .map(|name| name.as_bytes().to_vec())
        .collect();
    let whiteouts: Vec<Vec<u8>> = change
        .whiteouts
        .iter()
        .map(|name| name.as_bytes().to_vec())
        .collect();
    let (context, dest, compression, staging_path) = (
        app.context.clone(),
        app.dest.clone(),
        app.compression,
        staging.path().to_owned(),
    );
    let packed = tokio::task::spawn_blocking(move || {
        let options = PackOptions {
            compression,
            prefix: dest.trim_start_matches('/'),
            excludes: Some(&excludes),
            only: Some(&only),
            whiteouts: &whiteouts,
            ..PackOptions::default()
        };
        layer::pack_with(&context, &staging_path, options)
    })
    .await
    .map_err(|e| pack_error(std::io::Error::other(e)))?
    .map_err(pack_error)?;
    let delta = Some((change.files, change.bytes));
    Ok(planned(Some((packed, change.bytes)), delta, staging))
}

/// Remembers the stack this deploy pushed (best effort): the tree of a new
/// full layer stored, then the record.
pub(super) async fn remember(
    records: &RecordStore,
    app: &AppSettings,
    key: &Key,
    planned: &Planned,
) {
    if !planned.listed {
        return;
    }
    let (full, stored) = &planned.full;
    let full_ref = match stored {
        Some(at) => at.clone(),
        None => match ListingStore::new(records, app.tree_cache.clone())
            .put(full)
            .await
        {
            Ok(at) => at,
            Err(error) => {
                tracing::warn!(%error, "could not store the app's tree");
                return;
            }
        },
    };
    let record = StackRecord {
        version: 2,
        layers: planned.layers(),
        full: full_ref,
        changes: delta::changes(full, &planned.listing),
    };
    if let Err(error) = records.put(key, &record).await {
        tracing::warn!(%error, "could not record the app's layers");
    }
}
