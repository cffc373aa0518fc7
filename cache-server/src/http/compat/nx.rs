//! Nx self-hosted remote cache: `GET`/`PUT /v1/cache/{hash}`. A stored
//! entry is 200 (the only success Nx accepts), an existing one 409.

use axum::http::StatusCode;

use super::KeyedProtocol;
use crate::blob::Space;
use crate::http::object::IfExists;
use crate::metrics::Protocol;

/// The Nx self-hosted cache.
pub struct Nx;

impl KeyedProtocol for Nx {
    const SPACE: Space = Space::Nx;
    const PROTOCOL: Protocol = Protocol::Nx;
    const IF_EXISTS: IfExists = IfExists::Refuse;
    const STORED: Option<StatusCode> = Some(StatusCode::OK);
}
