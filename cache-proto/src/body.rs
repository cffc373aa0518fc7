//! JSON bodies of the native v1 API.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Request of `POST /v1/cas/missing`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MissingRequest {
    /// The digests the client is about to upload.
    pub digests: Vec<Digest>,
}

/// Response of `POST /v1/cas/missing`: the requested digests the server lacks,
/// in request order, without duplicates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MissingResponse {
    /// Digests to upload.
    pub missing: Vec<Digest>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Machine-readable code plus a human-readable message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable identifier, e.g. `digest_mismatch`, `not_found`, `storage_unavailable`.
    pub code: String,
    /// Explanation for a person.
    pub message: String,
    /// For `digest_mismatch`: the digest named in the path (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// For `digest_mismatch`: the digest of the body actually received (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

/// Response of `GET /v1/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// What the store holds now, from the index.
    pub stored: StoredStats,
    /// Request counters since the server started, one entry per protocol
    /// (`cas`, `ac`).
    pub protocols: std::collections::BTreeMap<String, ProtocolStats>,
    /// What each namespace is charged for, largest first (empty on a
    /// server with only the default namespace in use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceStats>,
}

/// What one namespace is charged for: its keyed entries and the blobs it
/// stored first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamespaceStats {
    /// The namespace (`default` for the default one).
    pub namespace: String,
    /// Number of objects.
    pub objects: u64,
    /// Sum of uncompressed sizes, in bytes.
    pub bytes: u64,
    /// Sum of sizes as stored, in bytes.
    pub stored_bytes: u64,
    /// Its `--namespace-quota`, if a rule names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

/// Totals over the index.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredStats {
    /// Number of CAS blobs.
    pub blobs: u64,
    /// Number of action-cache entries.
    pub action_entries: u64,
    /// Sum of uncompressed sizes, in bytes.
    pub bytes: u64,
    /// Sum of sizes as stored (after compression), in bytes.
    pub stored_bytes: u64,
    /// Number of entries of the compatibility protocols (Bazel, Turborepo,
    /// ccache, Gradle, Nx).
    #[serde(default)]
    pub protocol_entries: u64,
    /// The `--max-size` quota on `stored_bytes`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// Objects evicted since the server started.
    #[serde(default)]
    pub evicted_objects: u64,
    /// Bytes (as stored) evicted since the server started.
    #[serde(default)]
    pub evicted_bytes: u64,
}

/// Counters of one protocol.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProtocolStats {
    /// Reads that found the object.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Objects written.
    pub writes: u64,
    /// Uploads rejected (digest mismatch, too large, bad body).
    pub rejected: u64,
    /// Bytes received in accepted uploads (as sent on the wire).
    pub bytes_received: u64,
    /// Bytes sent in response bodies (as sent on the wire).
    pub bytes_served: u64,
}

/// Request of `POST /v1/leases/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who asks: an identifier unique to the build (host, process, random).
    pub holder: String,
    /// How long the lease lasts unless renewed, in seconds (1 to 3600).
    pub ttl_seconds: u64,
}

/// A lease: `201` when granted or renewed, `409` when held by another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// Unix milliseconds when it lapses unless renewed.
    pub expires_at_ms: i64,
}

/// A deploy-step timing, `POST /v1/events` (sent by `cachectl ensure-base`,
/// `layer` and `build`, best effort).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployEvent {
    /// `ensure-base`, `layer` or `build`.
    pub kind: String,
    /// The image (repository or layout) the step produced.
    pub image: String,
    /// The base key, when the step knows it (64 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Whether the base was found (no build).
    pub hit: bool,
    /// Seconds per phase (`hash`, `lookup`, `build`, `push`, `layer`, ...).
    #[serde(default)]
    pub phases: std::collections::BTreeMap<String, f64>,
    /// Wall time of the whole step, in seconds.
    pub seconds: f64,
    /// Bytes uploaded.
    #[serde(default)]
    pub bytes: u64,
    /// The manifest digest of the image the step pushed (`layer`, `build`),
    /// so that a deploy history can tie the event to the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A stored event, as `GET /v1/events` lists them (newest first).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredEvent {
    /// Sequence number.
    pub id: i64,
    /// When the server received it, unix milliseconds.
    pub at_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: DeployEvent,
}

/// Response of `GET /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventList {
    /// Newest first.
    pub events: Vec<StoredEvent>,
}
