//! Where the native builder's install step runs and what of it becomes
//! the layer: settings the key and the configuration name too, so a leaf.

use crate::invalid::Invalid;

/// Where the native builder's install step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallIn {
    /// Inside the `from` image's root filesystem.
    Image,
    /// On the host (the only choice without a `from` image).
    Host,
}

impl InstallIn {
    /// Parses `image` or `host`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "image" => Ok(Self::Image),
            "host" => Ok(Self::Host),
            other => Err(Invalid(format!("{other:?} is not image or host"))),
        }
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Host => "host",
        }
    }
}

/// What becomes the native builder's layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capture {
    /// What the step wrote under `{out}`, normalised (modes 0644/0755,
    /// owner root).
    #[default]
    Out,
    /// Everything the step changed in the `from` image's root filesystem
    /// (deletions as whiteouts), modes and owners kept, plus `{out}`'s
    /// content at the root.
    Changes,
}

impl Capture {
    /// Parses `out` or `changes`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "out" => Ok(Self::Out),
            "changes" => Ok(Self::Changes),
            other => Err(Invalid(format!("{other:?} is not out or changes"))),
        }
    }
}
