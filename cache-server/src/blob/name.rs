//! The names compatibility protocols give their entries: an opaque key,
//! validated for its characters and length before any I/O, inside the
//! space of one protocol (and, for Turborepo, one team).

use std::fmt;

/// Longest opaque key accepted.
pub const MAX_KEY_LEN: usize = 200;

/// An opaque client key: 1 to [`MAX_KEY_LEN`] characters of
/// `[A-Za-z0-9_.-]`, not starting with a dot. Never a path: it cannot hold
/// `/`, `..` as a whole, NUL or anything outside ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty or longer than the limit.
    #[error("a key is 1 to {MAX_KEY_LEN} characters, not {0}")]
    Length(usize),
    /// A character outside `[A-Za-z0-9_.-]`, or a leading dot.
    #[error("a key holds only letters, digits, '_', '-' and '.', and does not start with '.'")]
    Characters,
}

impl EntryKey {
    /// Validates `text` as a key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.is_empty() || text.len() > MAX_KEY_LEN {
            return Err(KeyError::Length(text.len()));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if text.starts_with('.') || !text.chars().all(allowed) {
            return Err(KeyError::Characters);
        }
        Ok(Self(text.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which protocol (and digest function, or team) an entry belongs to; each
/// is its own namespace of keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Space {
    /// Bazel action cache; `blake3` for `--digest_function=blake3`.
    BazelAc {
        /// Keys are BLAKE3 digests rather than SHA-256.
        blake3: bool,
    },
    /// Bazel CAS under SHA-256 (BLAKE3 CAS blobs are native blobs).
    BazelCasSha256,
    /// Turborepo artifacts, per team when the client names one.
    Turbo {
        /// `teamId` or `slug`.
        team: Option<EntryKey>,
    },
    /// ccache results.
    Ccache,
    /// Gradle build cache entries.
    Gradle,
    /// Nx task outputs.
    Nx,
}

impl Space {
    /// The storage folder and index kind of the space.
    pub fn segment(&self) -> String {
        match self {
            Self::BazelAc { blake3: false } => "bazel-ac".into(),
            Self::BazelAc { blake3: true } => "bazel-ac-blake3".into(),
            Self::BazelCasSha256 => "bazel-cas-sha256".into(),
            Self::Turbo { team: None } => "turbo".into(),
            Self::Turbo { team: Some(team) } => format!("turbo.{team}"),
            Self::Ccache => "ccache".into(),
            Self::Gradle => "gradle".into(),
            Self::Nx => "nx".into(),
        }
    }

    /// The inverse of [`Space::segment`].
    pub fn parse(segment: &str) -> Option<Self> {
        Some(match segment {
            "bazel-ac" => Self::BazelAc { blake3: false },
            "bazel-ac-blake3" => Self::BazelAc { blake3: true },
            "bazel-cas-sha256" => Self::BazelCasSha256,
            "turbo" => Self::Turbo { team: None },
            "ccache" => Self::Ccache,
            "gradle" => Self::Gradle,
            "nx" => Self::Nx,
            other => Self::Turbo {
                team: Some(EntryKey::parse(other.strip_prefix("turbo.")?).ok()?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_opaque_but_never_paths() {
        for good in ["a", "0123abcd", "team_x-1.v2", &"f".repeat(MAX_KEY_LEN)] {
            assert!(EntryKey::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../etc/passwd",
            "a\0b",
            "café",
            "a b",
            "%2e%2e",
            &"f".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(EntryKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spaces_round_trip_through_their_segments() {
        let team = EntryKey::parse("team_acme").unwrap();
        for space in [
            Space::BazelAc { blake3: false },
            Space::BazelAc { blake3: true },
            Space::BazelCasSha256,
            Space::Turbo { team: None },
            Space::Turbo { team: Some(team) },
            Space::Ccache,
            Space::Gradle,
            Space::Nx,
        ] {
            assert_eq!(Space::parse(&space.segment()), Some(space));
        }
        assert_eq!(Space::parse("turbo."), None);
        assert_eq!(Space::parse("other"), None);
    }
}
