//! Which install steps package layers can take apart: a pip install into
//! `{out}/PREFIX`, or `npm ci` in `{out}/PREFIX`.

use super::npm::NpmInstall;
use super::pip::PipInstall;

/// A native install step package layers can take apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallStep {
    /// `pip install … --target {out}/PREFIX`.
    Pip(PipInstall),
    /// `cd {out}/PREFIX && npm ci …`.
    Npm(NpmInstall),
}

impl InstallStep {
    /// The step `install` is, when package layers can take it apart.
    pub fn recognise(install: &str) -> Option<Self> {
        PipInstall::recognise(install)
            .map(Self::Pip)
            .or_else(|| NpmInstall::recognise(install).map(Self::Npm))
    }

    /// Where the packages go, relative to the image root.
    pub fn prefix(&self) -> &str {
        match self {
            Self::Pip(pip) => &pip.prefix,
            Self::Npm(npm) => &npm.prefix,
        }
    }
}
