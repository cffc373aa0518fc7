//! `cachectl`: builds and pushes a base image only when the inputs that
//! decide it (dependency manifests, recipe, build args, platform) change.
#![deny(missing_docs)]

pub mod app;
pub mod bench;
pub mod build;
pub mod cli;
pub mod config;
pub mod ensure;
pub mod events;
pub mod exclude;
pub mod folder;
pub mod image;
pub mod key;
pub mod layer;
pub mod lease;
pub mod output;
pub mod progress;
pub mod record;
pub mod tar_entry;
pub mod tree;
