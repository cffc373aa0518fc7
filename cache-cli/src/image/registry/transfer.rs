//! The values a registry session is set up with and answers in: its
//! settings, what a caller knows of a blob, how a blob arrived, a pulled
//! manifest.

use std::path::PathBuf;

/// Connection settings.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Username for every registry (else the Docker config is asked).
    pub user: Option<String>,
    /// Password for every registry.
    pub password: Option<String>,
    /// Registries (host[:port]) spoken to over plain HTTP. `localhost` and
    /// `127.0.0.1` always are.
    pub insecure: Vec<String>,
    /// Where manifests and configs pulled by digest are kept, if anywhere.
    pub digest_cache: Option<PathBuf>,
    /// Where the marks of `KnownLayers` are kept, if anywhere.
    pub known_layers: Option<PathBuf>,
    /// Where the entries of `PushedTrees` are kept, if anywhere.
    pub pushed_trees: Option<PathBuf>,
}

/// What the caller knows of whether the registry has a blob it uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Nothing: ask first (a HEAD), upload only when absent.
    Unknown,
    /// Just made from new content (a changed app's layer, its config): a
    /// blob up to [`UPLOAD_WITHOUT_ASKING`] bytes is uploaded at once,
    /// since asking costs a round trip and uploading so few bytes about one
    /// more. A larger one is still asked for first.
    ProbablyAbsent,
}

/// The largest blob uploaded without asking first (see [`Presence`]):
/// 64 KiB take about 5 ms at 100 Mbit/s, less than a round trip to most
/// registries that are not on the same machine.
pub const UPLOAD_WITHOUT_ASKING: u64 = 64 * 1024;

impl Presence {
    /// Whether a blob of `size` bytes is asked for before it is uploaded.
    pub(super) fn ask_first(self, size: u64) -> bool {
        self == Self::Unknown || size > UPLOAD_WITHOUT_ASKING
    }
}

/// How a blob came to be in the target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// It was there already.
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Copied, this many bytes.
    Copied(u64),
}

impl Transfer {
    /// Bytes uploaded.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Copied(bytes) => bytes,
            _ => 0,
        }
    }
}
