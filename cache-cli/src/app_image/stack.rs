//! The app as a stack of layers that changes at its top (`[app] layers =
//! "changes"`): a deploy whose tree differs from the last deploy on the
//! same base pushes one layer of what changed (and whiteouts for what was
//! deleted) on that deploy's layers, which the target already holds; past
//! the compaction bound, or with nothing known, the app is one full layer
//! again, as today.

use cache_proto::Key;

use super::delta::{self, AppStack, Compaction, StackLayer};
use super::error::LayerError;
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
    pub(super) listing: delta::Listing,
    /// Whether the tree was listed (a name that is not UTF-8 is not).
    listed: bool,
    /// Whether a stack was rewritten into one layer.
    pub(super) compacted: bool,
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

/// The last deploy's stack at `key`, when it can be built on: its record
/// is sound, and a layout still has its layers (a registry is not asked:
/// it refuses a manifest naming a layer it lacks, and the caller then
/// deploys without the stack).
async fn last_stack(
    registry: &Registry,
    records: &RecordStore,
    target: &Location,
    key: &Key,
) -> Option<AppStack> {
    let stack = match records.get::<AppStack>(key).await {
        Ok(Some(stack)) if stack.version == 1 && stack.is_safe() && !stack.layers.is_empty() => {
            stack
        }
        Ok(_) => return None,
        Err(error) => {
            tracing::debug!(%error, "app stack record unreachable: one full layer");
            return None;
        }
    };
    if matches!(target, Location::Registry(_)) {
        return Some(stack);
    }
    for layer in &stack.layers {
        if !target
            .has_blob(registry, &layer.digest)
            .await
            .unwrap_or(false)
        {
            return None;
        }
    }
    Some(stack)
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
    let (listed, last) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            // The stat cache the tree's digest just used and saved.
            let mut cache = tree_cache.map(|dir| StatCache::load(&dir, &context));
            delta::listing(&context, &listing_excludes, cache.as_mut())
        }),
        async {
            match on_last {
                true => last_stack(registry, records, target, key).await,
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
            listed: false,
            compacted: false,
            delta: None,
            _staging: staging,
        });
    };
    let app_bytes = delta::app_bytes(&listing);
    let change = last.as_ref().and_then(|last| {
        let change = delta::diff(&last.listing, &listing)?;
        (!rule.compacts(last.deltas(), last.delta_bytes(), change.bytes, app_bytes))
            .then_some(change)
    });
    let staging = tempfile::tempdir().map_err(pack_error)?;
    let (Some(last), Some(change)) = (&last, change) else {
        let compacted = last.is_some();
        let (packed, staging) = super::base::pack_app(app).await?;
        return Ok(Planned {
            kept: Vec::new(),
            packed: Some((packed, app_bytes)),
            listing,
            listed: true,
            compacted,
            delta: None,
            _staging: staging,
        });
    };
    if change.is_empty() {
        return Ok(Planned {
            kept: last.layers.clone(),
            packed: None,
            listing,
            listed: true,
            compacted: false,
            delta: None,
            _staging: staging,
        });
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
    Ok(Planned {
        kept: last.layers.clone(),
        packed: Some((packed, change.bytes)),
        listing,
        listed: true,
        compacted: false,
        delta: Some((change.files, change.bytes)),
        _staging: staging,
    })
}

/// Remembers the stack this deploy pushed (best effort).
pub(super) async fn remember(records: &RecordStore, key: &Key, planned: &Planned) {
    if !planned.listed {
        return;
    }
    let stack = AppStack {
        version: 1,
        layers: planned.layers(),
        listing: planned.listing.clone(),
    };
    if let Err(error) = records.put(key, &stack).await {
        tracing::warn!(%error, "could not record the app's layers");
    }
}
