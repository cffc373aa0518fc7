//! What is remembered of a pushed app image, under a key of everything that
//! decides it, so that an unchanged app is recognised and tagged again
//! without packing it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use cache_proto::Key;

use super::error::LayerError;
use crate::cli::settings::AppSettings;
use crate::image::Location;
use crate::image::registry::Registry;
use crate::pack::layer;

/// What is remembered about a pushed app image, under its app key, so that
/// an unchanged app is recognised without packing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// Format version.
    pub version: u32,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Manifest body, to tag it again without fetching it.
    pub manifest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Digest of the app layer.
    pub layer_digest: String,
    /// Size of the app layer.
    pub layer_bytes: u64,
}

/// The identity of the app image: base manifest, every app setting (the
/// layering too: an image of the same tree layered otherwise is another) and the
/// tree of the context (its digest from [`super::tree::AppTree`]).
pub(super) fn app_key(base_digest: &str, app: &AppSettings, tree_digest: &[u8; 32]) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-app-key/v1\0");
    hasher.update(base_digest.as_bytes());
    hasher.update(b"\0");
    let settings = json!({
        "dest": app.dest,
        "compression": format!("{:?}", app.compression),
        "cmd": app.cmd,
        "entrypoint": app.entrypoint,
        "env": app.env,
        "workdir": app.workdir,
        "user": app.user,
        "labels": app.labels,
        "expose": app.expose.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "by_change": app.by_change.is_some(),
        "created": layer::source_date_epoch(),
    });
    hasher.update(&serde_json::to_vec(&settings).unwrap_or_default());
    hasher.update(b"\0");
    hasher.update(tree_digest);
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Tags an identical earlier push again if the target still has it.
pub(super) async fn reuse(
    registry: &Registry,
    target: &Location,
    record: &AppRecord,
) -> Result<bool, LayerError> {
    if !target
        .has_manifest(registry, &record.manifest_digest)
        .await?
    {
        return Ok(false);
    }
    if target.resolve(registry).await?.as_deref() != Some(record.manifest_digest.as_str()) {
        target
            .push_manifest(registry, record.manifest.as_bytes(), &record.media_type)
            .await?;
    }
    Ok(true)
}
