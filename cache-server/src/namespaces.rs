//! Trust between namespaces: which namespaces a request reads and writes.
//!
//! A request writes only its own namespace, and reads its own, then the
//! namespaces its fallback chain names (`pr-*` → `main`), as far as its
//! credentials' [`NamespacePolicy`] allows. Namespaces need no
//! configuration; only chains, policies and quotas are configured.

use std::sync::LazyLock;

use cache_proto::{Namespace, NamespaceError, NamespacePattern};
use serde::{Deserialize, Serialize};

/// Where reads fall back: for the first rule whose pattern matches a
/// request's namespace, the namespaces read after it, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FallbackChains(Vec<(NamespacePattern, Vec<Namespace>)>);

/// A fallback rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not `PATTERN=NAMESPACE[,NAMESPACE...]`.
    #[error("a fallback chain is PATTERN=NAMESPACE[,NAMESPACE...] (e.g. 'pr-*=main'), not {0:?}")]
    Shape(String),
    /// A bad pattern or namespace.
    #[error(transparent)]
    Name(#[from] NamespaceError),
}

impl FallbackChains {
    /// Parses rules of the form `pr-*=main` or `feature-*=develop,main`.
    pub fn parse<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Self, ChainError> {
        let mut chains = Vec::new();
        for rule in rules {
            let (pattern, targets) = rule
                .split_once('=')
                .ok_or_else(|| ChainError::Shape(rule.to_owned()))?;
            let pattern = NamespacePattern::parse(pattern.trim())?;
            let targets = targets
                .split(',')
                .map(|target| Namespace::parse(target.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            chains.push((pattern, targets));
        }
        Ok(Self(chains))
    }

    /// The namespaces read after `namespace`, without itself or repeats.
    pub fn after(&self, namespace: &Namespace) -> Vec<Namespace> {
        let Some((_, targets)) = self
            .0
            .iter()
            .find(|(pattern, _)| pattern.matches(namespace))
        else {
            return Vec::new();
        };
        let mut out: Vec<Namespace> = Vec::new();
        for target in targets {
            if target != namespace && !out.contains(target) {
                out.push(target.clone());
            }
        }
        out
    }
}

/// The namespaces a credential may write and read, and the one its requests
/// use when they name none. A credential without a policy (every token
/// from before namespaces, and every request on a server without auth) may
/// use every namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePolicy {
    /// The namespace of requests that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Namespace>,
    /// Namespaces it may write (and read).
    #[serde(default)]
    pub write: Vec<NamespacePattern>,
    /// Namespaces it may read.
    #[serde(default)]
    pub read: Vec<NamespacePattern>,
}

impl NamespacePolicy {
    /// [`NamespacePolicy::unrestricted`], made once: admitting a request
    /// borrows it rather than building it.
    pub fn unrestricted_ref() -> &'static Self {
        static UNRESTRICTED: LazyLock<NamespacePolicy> =
            LazyLock::new(NamespacePolicy::unrestricted);
        &UNRESTRICTED
    }

    /// Every namespace, read and write.
    pub fn unrestricted() -> Self {
        Self {
            default: None,
            write: vec![NamespacePattern::any()],
            read: vec![NamespacePattern::any()],
        }
    }

    /// The policy of `--write-namespace`, `--read-namespace` and
    /// `--default-namespace`; `None` (every namespace) when all are empty.
    pub fn from_lists(
        write: Vec<NamespacePattern>,
        read: Vec<NamespacePattern>,
        default: Option<Namespace>,
    ) -> Option<Self> {
        if write.is_empty() && read.is_empty() && default.is_none() {
            return None;
        }
        let write = if write.is_empty() && read.is_empty() {
            vec![NamespacePattern::any()]
        } else {
            write
        };
        Some(Self {
            default,
            write,
            read,
        })
    }

    /// Whether it may write `namespace`.
    pub fn may_write(&self, namespace: &Namespace) -> bool {
        self.write.iter().any(|pattern| pattern.matches(namespace))
    }

    /// Whether it may read `namespace` (what it may write, it may read).
    pub fn may_read(&self, namespace: &Namespace) -> bool {
        self.may_write(namespace) || self.read.iter().any(|pattern| pattern.matches(namespace))
    }

    /// The namespace of a request that names none: the policy's default,
    /// else the first namespace it may write by name, else the first it may
    /// read by name, else `default`.
    pub fn default_namespace(&self) -> Namespace {
        self.default
            .clone()
            .or_else(|| self.write.iter().find_map(NamespacePattern::literal))
            .or_else(|| self.read.iter().find_map(NamespacePattern::literal))
            .unwrap_or_default()
    }

    /// One line for listings: `write main; read main, release-*`.
    pub fn describe(&self) -> String {
        let list = |patterns: &[NamespacePattern]| {
            patterns
                .iter()
                .map(NamespacePattern::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut parts = Vec::new();
        if !self.write.is_empty() {
            parts.push(format!("write {}", list(&self.write)));
        }
        if !self.read.is_empty() {
            parts.push(format!("read {}", list(&self.read)));
        }
        if let Some(default) = &self.default {
            parts.push(format!("default {default}"));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// The namespaces of one admitted request: it writes `own` only and reads
/// `reads` in order (`own` first, then its fallbacks it may read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// Where it writes, and reads first.
    pub own: Namespace,
    /// Where it reads, in order.
    pub reads: Vec<Namespace>,
}

impl Namespaces {
    /// The namespaces of a request in `own` under `policy`, reading along
    /// `chains`: fallbacks the policy may not read are left out.
    pub fn resolve(own: Namespace, chains: &FallbackChains, policy: &NamespacePolicy) -> Self {
        let mut reads = vec![own.clone()];
        reads.extend(
            chains
                .after(&own)
                .into_iter()
                .filter(|namespace| policy.may_read(namespace)),
        );
        Self { own, reads }
    }

    /// Only `default`: a request on a server without namespaces.
    pub fn default_only() -> Self {
        Self {
            own: Namespace::default(),
            reads: vec![Namespace::default()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> Namespace {
        Namespace::parse(text).unwrap()
    }

    fn patterns(texts: &[&str]) -> Vec<NamespacePattern> {
        texts
            .iter()
            .map(|text| NamespacePattern::parse(text).unwrap())
            .collect()
    }

    #[test]
    fn chains_pick_the_first_matching_rule() {
        let chains =
            FallbackChains::parse(["pr-*=main", "feature-*=develop, main", "*=main"]).unwrap();
        assert_eq!(chains.after(&ns("pr-7")), vec![ns("main")]);
        assert_eq!(
            chains.after(&ns("feature-x")),
            vec![ns("develop"), ns("main")]
        );
        // A namespace never falls back to itself.
        assert_eq!(chains.after(&ns("main")), Vec::<Namespace>::new());
        assert_eq!(chains.after(&ns("other")), vec![ns("main")]);
        assert!(FallbackChains::default().after(&ns("pr-1")).is_empty());
        for bad in ["pr-*", "pr-*=", "=main", "pr/1=main", "pr-*=main,"] {
            assert!(FallbackChains::parse([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pull_request_policy_writes_its_own_and_reads_main() {
        let policy = NamespacePolicy {
            default: None,
            write: patterns(&["pr-42"]),
            read: patterns(&["main"]),
        };
        assert!(policy.may_write(&ns("pr-42")));
        assert!(!policy.may_write(&ns("main")));
        assert!(!policy.may_write(&ns("pr-43")));
        assert!(policy.may_read(&ns("main")));
        assert!(policy.may_read(&ns("pr-42")));
        assert!(!policy.may_read(&ns("pr-43")));
        assert_eq!(policy.default_namespace(), ns("pr-42"));

        let chains = FallbackChains::parse(["pr-*=main,release"]).unwrap();
        let resolved = Namespaces::resolve(ns("pr-42"), &chains, &policy);
        assert_eq!(resolved.reads, vec![ns("pr-42"), ns("main")]);
    }

    #[test]
    fn defaults_follow_the_policy() {
        let fork = NamespacePolicy {
            default: None,
            write: Vec::new(),
            read: patterns(&["main"]),
        };
        assert_eq!(fork.default_namespace(), ns("main"));
        assert!(!fork.may_write(&ns("main")));
        assert_eq!(
            NamespacePolicy::unrestricted().default_namespace(),
            Namespace::default()
        );
        let explicit = NamespacePolicy {
            default: Some(ns("ci")),
            ..NamespacePolicy::unrestricted()
        };
        assert_eq!(explicit.default_namespace(), ns("ci"));
        assert_eq!(fork.describe(), "read main");
    }
}
