//! `cachectl`: builds and pushes a base image only when the inputs that
//! decide it (dependency manifests, recipe, build args, platform) change.
//!
//! Where things are:
//! - [`cli`]: the flags, their `CACHECTL_*` variables and `cachectl.toml`,
//!   merged (flag > variable > file) into each command's settings;
//! - [`commands`]: one module per subcommand, named after it;
//! - [`exit`]: how a run ends (its exit code), a leaf every error uses;
//! - [`client`]: the one cache-server client (records, leases, CAS);
//! - [`app_image`]: an app as one layer on its base (`layer`, `build`);
//! - [`builder`]: the base builders (native, buildah, podman, docker);
//! - [`image`]: registries, OCI layouts, references and descriptors;
//! - [`packages`]: package layers (a plan resolved in the image, a layer per package);
//! - [`pack`]: the app layer's tar, its entries, tree identity, exclusions;
//! - [`folder`]: the folder cache's manifest, scan and restore;
//! - [`invalid`]: a user-written value that cannot be used (a leaf);
//! - [`key`]: the base key;
//! - [`project`]: what kind of project a folder is (`cachectl init`);
//! - [`upstream`]: the images a base is built on and their digests;
//! - [`report`]: what commands print, progress, deploy events, bench tables.
#![deny(missing_docs)]

pub mod app_image;
pub mod builder;
pub mod cli;
pub mod client;
pub mod commands;
pub mod exit;
pub mod folder;
pub mod image;
pub mod invalid;
pub mod key;
pub mod pack;
pub mod packages;
pub mod project;
pub mod replace_file;
pub mod report;
pub mod upstream;
