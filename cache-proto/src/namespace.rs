//! Namespaces: the trust boundaries of keyed entries.
//!
//! Every keyed entry (action-cache values, every compatibility protocol's
//! entries, build leases) lives in a [`Namespace`]; CAS blobs are global,
//! because their content is verified against their name. A request names its
//! namespace with a `/ns/{namespace}/` path prefix, the [`HEADER`], or its
//! token's default; without any it is [`Namespace::DEFAULT`]. A
//! [`NamespacePattern`] (`pr-*`) selects namespaces in token policies,
//! fallback chains and quotas.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The request header naming a namespace (the path prefix wins over it).
pub const HEADER: &str = "x-cachectl-namespace";

/// The path prefix segment before a namespace: `/ns/{namespace}/...`.
pub const PATH_PREFIX: &str = "/ns/";

/// Longest namespace.
pub const MAX_LEN: usize = 64;

/// A namespace: 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._-]`, starting
/// with a letter or digit (so never `.`, `..` or a flag). Its text is
/// shared: every request carries its namespaces, and a clone is a
/// reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

/// [`Namespace::DEFAULT`], allocated once.
static DEFAULT_NAMESPACE: LazyLock<Namespace> =
    LazyLock::new(|| Namespace(Arc::from(Namespace::DEFAULT)));

/// Why a namespace or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// Empty or too long.
    #[error("a namespace is 1 to {MAX_LEN} characters, not {0}")]
    Length(usize),
    /// A character outside the alphabet, or a bad first character.
    #[error(
        "a namespace holds only letters, digits, '.', '_' and '-', and starts with a letter or digit: {0:?}"
    )]
    Characters(String),
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl Namespace {
    /// The namespace of requests that name none: today's flat space.
    pub const DEFAULT: &'static str = "default";

    /// Validates `text` as a namespace.
    pub fn parse(text: &str) -> Result<Self, NamespaceError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(NamespaceError::Length(text.len()));
        }
        let first_ok = text.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !first_ok || !text.chars().all(allowed) {
            return Err(NamespaceError::Characters(text.to_owned()));
        }
        Ok(Self(Arc::from(text)))
    }

    /// [`Namespace::DEFAULT`].
    pub fn default_namespace() -> Self {
        DEFAULT_NAMESPACE.clone()
    }

    /// Whether this is [`Namespace::DEFAULT`].
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::default_namespace()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Namespace {
    type Err = NamespaceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Namespaces selected by name, with `*` standing for any run of characters
/// (`pr-*`, `*`, `main`). Its text is shared, like a [`Namespace`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespacePattern(Arc<str>);

impl NamespacePattern {
    /// Validates `text`: a namespace in which `*` may also appear.
    pub fn parse(text: &str) -> Result<Self, NamespaceError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(NamespaceError::Length(text.len()));
        }
        let first_ok = text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '*');
        if !first_ok || !text.chars().all(|c| allowed(c) || c == '*') {
            return Err(NamespaceError::Characters(text.to_owned()));
        }
        Ok(Self(Arc::from(text)))
    }

    /// The pattern matching every namespace.
    pub fn any() -> Self {
        static ANY: LazyLock<NamespacePattern> = LazyLock::new(|| NamespacePattern(Arc::from("*")));
        ANY.clone()
    }

    /// The namespace this pattern names when it has no `*`.
    pub fn literal(&self) -> Option<Namespace> {
        (!self.0.contains('*')).then(|| Namespace(self.0.clone()))
    }

    /// Whether `namespace` is selected.
    pub fn matches(&self, namespace: &Namespace) -> bool {
        glob_matches(&self.0, &namespace.0)
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters and everything else for itself. Iterative with one backtrack
/// point, so never exponential.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NamespacePattern {
    type Err = NamespaceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for NamespacePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NamespacePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Splits a `/ns/{namespace}/rest` path into the namespace text and `/rest`;
/// `None` when the path has no namespace prefix. The text is not validated.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    match rest.find('/') {
        Some(end) => Some((&rest[..end], &rest[end..])),
        None => Some((rest, "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_plain_names() {
        for good in [
            "main",
            "pr-42",
            "default",
            "team_a.v2",
            "A1",
            &"a".repeat(MAX_LEN),
        ] {
            assert!(Namespace::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "_x",
            "a/b",
            "a b",
            "pr-*",
            "café",
            &"a".repeat(MAX_LEN + 1),
        ] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_match_with_stars_only() {
        let ns = |s: &str| Namespace::parse(s).unwrap();
        let pattern = |s: &str| NamespacePattern::parse(s).unwrap();
        assert!(pattern("pr-*").matches(&ns("pr-42")));
        assert!(pattern("pr-*").matches(&ns("pr-")));
        assert!(!pattern("pr-*").matches(&ns("main")));
        assert!(!pattern("pr-*").matches(&ns("xpr-1")));
        assert!(pattern("*").matches(&ns("anything")));
        assert!(pattern("main").matches(&ns("main")));
        assert!(!pattern("main").matches(&ns("main2")));
        assert!(pattern("*-*-x").matches(&ns("a-b-c-x")));
        assert!(!pattern("*a*a*a*a*b").matches(&ns(&"a".repeat(60))));
        assert_eq!(pattern("main").literal(), Some(ns("main")));
        assert_eq!(pattern("pr-*").literal(), None);
        assert!(NamespacePattern::parse("a/b").is_err());
        assert!(NamespacePattern::parse("").is_err());
    }

    #[test]
    fn namespace_prefixes_split_off_the_path() {
        assert_eq!(split_path("/ns/pr-1/v1/ac/x"), Some(("pr-1", "/v1/ac/x")));
        assert_eq!(split_path("/ns/main"), Some(("main", "/")));
        assert_eq!(split_path("/ns//cas/x"), Some(("", "/cas/x")));
        assert_eq!(split_path("/v1/ac/x"), None);
        assert_eq!(split_path("/nsx/a/b"), None);
    }
}
