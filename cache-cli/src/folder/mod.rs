//! Content-addressed folder caches (`cachectl cache save|restore`): a
//! folder is stored file by file in the cache server's CAS, described by a
//! tree manifest (itself a CAS blob) that an action-cache key points at.
//! The command itself is `commands::cache`; the CAS client `client::cas`.
//!
//! - [`manifest`]: the tree manifest and its JSON form;
//! - [`scan`]: walking and hashing a folder into a manifest;
//! - [`restore`]: writing a manifest back, atomically and never outside the
//!   target folder whatever the manifest says.

pub mod manifest;
pub mod packs;
pub mod restore;
pub mod scan;
