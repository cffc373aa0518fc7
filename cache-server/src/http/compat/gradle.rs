//! Gradle HTTP build cache: `GET`/`HEAD`/`PUT /cache/{key}`. Entries are
//! replaced on `PUT`; an oversize entry is 413, which Gradle skips without
//! turning the remote cache off.

use axum::http::StatusCode;

use super::KeyedProtocol;
use crate::blob::Space;
use crate::http::object::IfExists;
use crate::metrics::Protocol;

/// The Gradle build cache.
pub struct Gradle;

impl KeyedProtocol for Gradle {
    const SPACE: Space = Space::Gradle;
    const PROTOCOL: Protocol = Protocol::Gradle;
    const IF_EXISTS: IfExists = IfExists::Replace;
    const STORED: Option<StatusCode> = None;
}
