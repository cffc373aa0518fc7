//! What each command did, as printed with `--json`: the commands fill these
//! in, the output module prints them and the events module turns them into
//! deploy events.

use serde::Serialize;

use crate::key::Change;

/// The outcome, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct EnsureReport {
    /// The base key.
    pub key: String,
    /// The target image.
    pub image: String,
    /// Pullable reference.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Whether an existing base was used.
    pub hit: bool,
    /// `cache`, `registry` or `built`.
    pub source: &'static str,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Time spent hashing the inputs into the key.
    pub hash_seconds: f64,
    /// Time spent looking the key up (record, registry tag).
    pub lookup_seconds: f64,
    /// Time spent building (0 on a hit).
    pub build_seconds: f64,
    /// Time spent publishing (0 on a hit).
    pub push_seconds: f64,
    /// Bytes uploaded.
    pub pushed_bytes: u64,
    /// On a miss: what changed since the last recorded base of this image.
    pub changed: Vec<Change>,
    /// A base built with package layers: each dependency layer, then the
    /// glue, and whether this run built it or reused it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub package_layers: Vec<PackageLayer>,
    /// A base of package layers: how its plan differs from the last
    /// base's (`six 1.16.0 -> 1.17.0`, `+ name 1.0`, `- name 2.0`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan_changes: Vec<String>,
    /// Warnings (cache unreachable, stale record, ...).
    pub warnings: Vec<String>,
}

/// One layer of a base built with package layers.
#[derive(Debug, Clone, Serialize)]
pub struct PackageLayer {
    /// Its package's name, `group-N`, or `glue`.
    pub name: String,
    /// Its packages, `name==version` (none for the glue).
    pub packages: Vec<String>,
    /// Its blob digest.
    pub digest: String,
    /// Its compressed size.
    pub bytes: u64,
    /// `built` (installed and packed by this run) or `reused` (recorded,
    /// and still in the repository: neither built nor uploaded).
    pub source: &'static str,
}

/// An app layered by change: its layers and what this deploy pushed.
#[derive(Debug, Clone, Serialize)]
pub struct AppLayers {
    /// How many app layers the image has.
    pub layers: usize,
    /// How many of them this deploy pushed (0 or 1).
    pub pushed: usize,
    /// The files the delta layer holds, when this deploy pushed one.
    pub delta_files: Option<usize>,
    /// Their bytes.
    pub delta_bytes: Option<u64>,
    /// Whether this deploy rewrote the stack.
    pub compacted: bool,
    /// How: `deltas` (its deltas into one, on the full layer) or `app`
    /// (the whole app into one layer).
    pub compaction: Option<&'static str>,
}

/// The outcome, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Whether an identical earlier push was recognised (nothing packed or uploaded).
    pub reused: bool,
    /// Target repository and tag (or layout and name).
    pub image: String,
    /// Pullable reference with digest.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// The base it was put on.
    pub base: String,
    /// Digest of the app layer (compressed).
    pub layer_digest: String,
    /// Size of the app layer (compressed).
    pub layer_bytes: u64,
    /// Bytes uploaded to the registry (0 for an unchanged app).
    pub uploaded_bytes: u64,
    /// Base layers mounted from the base's repository.
    pub mounted: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Seconds packing the layer.
    pub layer_seconds: f64,
    /// Seconds pushing.
    pub push_seconds: f64,
    /// Wall time.
    pub seconds: f64,
    /// The deploy tag the image also got (`TAG.deploy-TIME`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_tag: Option<String>,
    /// What went wrong without failing the deploy (an app record or a
    /// deploy tag that could not be written, a cache that could not be
    /// asked); printed on stderr too.
    pub warnings: Vec<String>,
    /// The manifest pushed and its media type (to tag it again without
    /// fetching it back).
    #[serde(skip)]
    pub manifest: Option<(Vec<u8>, String)>,
    /// The app's layers, when it is layered by change (`[app] layers =
    /// "changes"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_layers: Option<AppLayers>,
}

/// The result of a save.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// The cache's name.
    pub name: String,
    /// The exact key.
    pub key: String,
    /// The manifest's digest.
    pub manifest: String,
    /// Files in the folder.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Distinct contents the server lacked and got.
    pub uploaded_files: u64,
    /// Bytes sent for them (compressed where it paid), manifest included.
    pub uploaded_bytes: u64,
    /// New packs they travelled in (small files are stored in packs).
    pub uploaded_packs: u64,
    /// Distinct contents the server already had.
    pub skipped_files: u64,
    /// Wall time.
    pub seconds: f64,
}

/// How a restore matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hit {
    /// The exact key.
    Exact,
    /// The newest save of the same name (like `restore-keys`).
    Partial,
    /// Nothing to restore.
    Miss,
}

/// The result of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The cache's name.
    pub name: String,
    /// The exact key asked for.
    pub key: String,
    /// How it matched.
    pub hit: Hit,
    /// The key restored (the exact one, or the newest of the name).
    pub restored_key: Option<String>,
    /// Files in the restored folder.
    pub files: u64,
    /// Files written.
    pub written_files: u64,
    /// Files already right in the target.
    pub unchanged_files: u64,
    /// Contents downloaded.
    pub downloaded_files: u64,
    /// Bytes received for them.
    pub downloaded_bytes: u64,
    /// Bytes of the folder not downloaded (in the target or the local store).
    pub skipped_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The app image and tag.
    pub image: String,
    /// The digest it pointed at before.
    pub previous: Option<String>,
    /// The digest it points at now.
    pub digest: String,
    /// Pullable reference of it.
    pub reference: String,
    /// The deploy it went back to.
    pub deploy: String,
    /// Blob bytes uploaded: always 0.
    pub uploaded_bytes: u64,
    /// The deploy tag of the rollback itself.
    pub deploy_tag: Option<String>,
    /// What went wrong without failing the rollback; printed on stderr too.
    pub warnings: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}
