//! Route paths of the native v1 API.
//!
//! The `*_TEMPLATE` constants are the router's patterns; the functions build
//! concrete paths for clients.

use crate::{Digest, Key};

/// `HEAD/GET/PUT` a blob by digest.
pub const CAS_TEMPLATE: &str = "/v1/cas/{digest}";
/// `POST` a list of digests, answered with those the server lacks.
pub const CAS_MISSING: &str = "/v1/cas/missing";
/// Upload of many small blobs in one body (see [`crate::batch`]).
pub const CAS_BATCH: &str = "/v1/cas/batch";
/// Download of many small blobs in one answer (see [`crate::batch`]).
pub const CAS_BATCH_GET: &str = "/v1/cas/batch-get";
/// `GET/PUT/HEAD/DELETE` an action-cache entry.
pub const AC_TEMPLATE: &str = "/v1/ac/{key}";
/// `POST` (acquire or renew) / `DELETE` (release) a build lease.
pub const LEASE_TEMPLATE: &str = "/v1/leases/{key}";
/// `GET` JSON statistics.
pub const STATS: &str = "/v1/stats";
/// `GET` Prometheus text metrics.
pub const METRICS: &str = "/metrics";
/// `GET` (list) / `POST` (create) access tokens; admin only.
pub const TOKENS: &str = "/v1/tokens";
/// `DELETE` (revoke) an access token by id or name; admin only.
pub const TOKEN_TEMPLATE: &str = "/v1/tokens/{id}";
/// `POST` a deploy event / `GET` recent ones.
pub const EVENTS: &str = "/v1/events";
/// `GET` the dashboard (one self-contained HTML page).
pub const DASHBOARD: &str = "/";
/// `GET` liveness: the process answers.
pub const HEALTHZ: &str = "/healthz";
/// `GET` readiness: the storage answers too.
pub const READYZ: &str = "/readyz";

/// The path of a blob.
pub fn cas(digest: &Digest) -> String {
    format!("/v1/cas/{digest}")
}

/// The path of an action-cache entry.
pub fn ac(key: &Key) -> String {
    format!("/v1/ac/{key}")
}

/// The path of a build lease.
pub fn lease(key: &Key) -> String {
    format!("/v1/leases/{key}")
}
