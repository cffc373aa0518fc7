//! How a run of cachectl ends: its [`Exit`] code, and the [`Failure`] a
//! command returns. A leaf: each error type says its own exit (an `exit()`
//! method beside it), so no module needs the commands to know one.

/// The exit code of a failed run (0 is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: the build, or another step, failed.
    Failed,
    /// 2: a usage or configuration error.
    Usage,
    /// 3: the cache or a registry could not be reached (or refused our
    /// credentials) when it was needed.
    Unreachable,
}

impl Exit {
    /// The exit of a cachectl process that ended with `code` (not 0): 2
    /// and 3 as they are, anything else a failure.
    pub fn of_code(code: i32) -> Self {
        match code {
            2 => Self::Usage,
            3 => Self::Unreachable,
            _ => Self::Failed,
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Unreachable => 3,
        }
    }
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// How the run ends.
    pub exit: Exit,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// `error`, ending the run with `exit`.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Exit::Usage, error)
    }

    /// Any other failure (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Exit::Failed, error)
    }

    /// A cache or registry that was needed and could not be reached (exit 3).
    pub fn unreachable(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Exit::Unreachable, error)
    }
}
