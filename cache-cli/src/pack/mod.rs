//! The app layer: a reproducible tar of a folder.
//!
//! - [`layer`]: packing a folder into one compressed layer and its digests;
//! - [`tar_entry`]: one entry in POSIX ustar + PAX form, byte for byte;
//! - [`tree`]: a folder's identity (its digest) with a stat cache;
//! - [`exclude`]: `.dockerignore` and `exclude` patterns.

pub mod exclude;
pub mod layer;
pub mod tar_entry;
pub mod tree;
