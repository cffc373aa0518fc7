//! The digest of an app's context, hashed on the blocking pool from the
//! moment a command starts, so that it overlaps the round trips for the
//! base; and what it lets a deploy do before the base is known: open the
//! upload sessions of a changed app's layer and config.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::error::LayerError;
use crate::cli::settings::AppSettings;
use crate::image::Location;
use crate::image::registry::Registry;
use crate::pack::exclude::Excludes;
use crate::pack::tree;

/// The context's digest, being hashed or hashed; shared by its readers.
pub struct AppTree {
    digest: Shared<BoxFuture<'static, Option<[u8; 32]>>>,
    /// Whether upload sessions were asked for already.
    ahead: AtomicBool,
}

impl AppTree {
    /// Starts hashing `app`'s context.
    pub fn start(app: &AppSettings) -> Result<Self, LayerError> {
        let excludes = Excludes::for_context(&app.context, &app.exclude)
            .map_err(|e| LayerError::Usage(e.into()))?;
        // A layout target (often inside the context: `oci:./build/oci`) is
        // made before the context is hashed, not while it is: its folders
        // are then in the hash as they will be in the layer, and a second
        // deploy of the same app is recognised.
        if let Location::Layout { layout, .. } = &app.image
            && let Err(error) = std::fs::create_dir_all(layout.dir())
        {
            tracing::debug!(%error, "could not make the layout folder yet");
        }
        let settings = app.clone();
        let hashing =
            tokio::task::spawn_blocking(move || context_digest(&settings, &excludes).ok());
        Ok(Self {
            digest: hashing.map(|hashed| hashed.ok().flatten()).boxed().shared(),
            ahead: AtomicBool::new(false),
        })
    }

    /// The digest of the context as the layer would hold it; `None` when
    /// the context cannot be read (packing then reports why).
    pub async fn digest(&self) -> Option<[u8; 32]> {
        self.digest.clone().await
    }

    /// Opens the upload sessions of `app`'s new layer and config once the
    /// digest is known, if this machine pushed there before (see
    /// [`Registry::open_uploads_ahead`]): nothing when the context cannot
    /// be read, or when they were asked for already (by `build` while the
    /// base was ensured).
    pub async fn open_uploads_ahead(&self, registry: &Registry, app: &AppSettings) {
        if self.ahead.swap(true, Ordering::Relaxed) {
            return;
        }
        app.image.open_uploads_ahead(registry, self.digest()).await;
    }
}

/// The digest of the context as the layer would hold it, using (and
/// refreshing) the stat cache when there is one.
fn context_digest(app: &AppSettings, excludes: &Excludes) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    match &app.tree_cache {
        Some(dir) => {
            let mut cache = tree::StatCache::load(dir, &app.context);
            tree::hash_tree(&app.context, excludes, &mut hasher, Some(&mut cache))?;
            if let Err(error) = cache.save() {
                tracing::debug!(%error, "could not save the stat cache");
            }
        }
        None => tree::hash_tree(&app.context, excludes, &mut hasher, None)?,
    }
    Ok(*hasher.finalize().as_bytes())
}
