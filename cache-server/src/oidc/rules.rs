//! Claims to rights: the first rule whose `when` matches a verified ID
//! token's claims gives its scope and namespace policy, with `{claim}`
//! placeholders filled from the token (`pr-{pr}`).

use std::collections::BTreeMap;
use std::fmt;

use cache_proto::{Namespace, NamespacePattern, glob_matches};
use serde_json::{Map, Value};

use crate::index::Scope;
use crate::namespaces::NamespacePolicy;

/// A verified token's claims.
#[derive(Debug, Clone, Default)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Wraps a verified payload.
    pub fn new(payload: Map<String, Value>) -> Self {
        Self(payload)
    }

    /// A claim as text: strings as they are, numbers and booleans written
    /// out (GitLab sends `"true"`, others `true`). `pr` is derived: the
    /// number in a `ref` of `refs/pull/N/...` (GitHub) or
    /// `refs/merge-requests/N/...` (GitLab).
    pub fn get(&self, name: &str) -> Option<String> {
        if name == "pr" {
            return self.get("ref").as_deref().and_then(pull_request_number);
        }
        match self.0.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }
}

/// `42` for `refs/pull/42/merge` or `refs/merge-requests/42/head`.
fn pull_request_number(reference: &str) -> Option<String> {
    let rest = reference
        .strip_prefix("refs/pull/")
        .or_else(|| reference.strip_prefix("refs/merge-requests/"))?;
    let (number, _) = rest.split_once('/')?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then(|| number.to_owned())
}

/// A namespace or pattern with `{claim}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without `}`, or a name that is not a claim name.
    #[error("{0:?}: a placeholder is {{claim}} with a claim name of a-z, 0-9 and _")]
    Placeholder(String),
    /// Not a namespace pattern even with placeholders filled.
    #[error("{text:?} does not make a namespace: {problem}")]
    Namespace {
        /// The template.
        text: String,
        /// Why.
        problem: String,
    },
}

/// Why a matching rule could not fill its templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilled(String);

impl fmt::Display for Unfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Parses `pr-{pr}`, `main`, `branch-*`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| TemplateError::Placeholder(text.to_owned()))?;
            let name = &after[..close];
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(TemplateError::Placeholder(text.to_owned()));
            }
            parts.push(Part::Claim(name.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(TemplateError::Placeholder(text.to_owned()));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let template = Self {
            text: text.to_owned(),
            parts,
        };
        let sample = template.fill_with(|_| Some("1".to_owned()));
        NamespacePattern::parse(&sample).map_err(|e| TemplateError::Namespace {
            text: text.to_owned(),
            problem: e.to_string(),
        })?;
        Ok(template)
    }

    fn fill_with(&self, mut value: impl FnMut(&str) -> Option<String>) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.clone(),
                Part::Claim(name) => value(name).unwrap_or_default(),
            })
            .collect()
    }

    /// The text with every placeholder filled from `claims`. A value must
    /// be 1 to 64 characters of `A-Z a-z 0-9 . _ -`: a claim can never
    /// widen a pattern (`*`) or reach another namespace's path.
    fn fill(&self, claims: &Claims) -> Result<String, Unfilled> {
        let mut problem = None;
        let text = self.fill_with(|name| match claims.get(name) {
            Some(value) if is_plain(&value) => Some(value),
            Some(value) => {
                problem.get_or_insert_with(|| {
                    Unfilled(format!(
                        "claim {name} = {value:?} cannot be part of a namespace"
                    ))
                });
                None
            }
            None => {
                problem.get_or_insert_with(|| {
                    Unfilled(format!("the token has no value for {{{name}}}"))
                });
                None
            }
        });
        match problem {
            Some(problem) => Err(problem),
            None => Ok(text),
        }
    }

    fn pattern(&self, claims: &Claims) -> Result<NamespacePattern, Unfilled> {
        let text = self.fill(claims)?;
        NamespacePattern::parse(&text).map_err(|e| Unfilled(format!("{text:?}: {e}")))
    }

    fn namespace(&self, claims: &Claims) -> Result<Namespace, Unfilled> {
        let text = self.fill(claims)?;
        Namespace::parse(&text).map_err(|e| Unfilled(format!("{text:?}: {e}")))
    }
}

/// Whether a claim value may stand in a namespace.
fn is_plain(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One rule of an issuer.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Claim name to `*` glob; every one must match.
    pub when: BTreeMap<String, String>,
    /// Read or write.
    pub scope: Scope,
    /// Namespaces it may write.
    pub write: Vec<Template>,
    /// Namespaces it may read.
    pub read: Vec<Template>,
    /// Namespace of requests that name none.
    pub default: Option<Template>,
}

/// What a token's claims are granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The highest scope.
    pub scope: Scope,
    /// Its namespaces.
    pub policy: NamespacePolicy,
}

impl Rule {
    /// Whether every `when` claim matches.
    pub fn matches(&self, claims: &Claims) -> bool {
        self.when.iter().all(|(name, pattern)| {
            claims
                .get(name)
                .is_some_and(|value| glob_matches(pattern, &value))
        })
    }

    /// The grant of this rule for `claims` (which it matches).
    pub fn grant(&self, claims: &Claims) -> Result<Grant, Unfilled> {
        let patterns = |templates: &[Template]| {
            templates
                .iter()
                .map(|template| template.pattern(claims))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Grant {
            scope: self.scope,
            policy: NamespacePolicy {
                default: self
                    .default
                    .as_ref()
                    .map(|template| template.namespace(claims))
                    .transpose()?,
                write: patterns(&self.write)?,
                read: patterns(&self.read)?,
            },
        })
    }

    /// `repository = "acme/web", event_name = "push"`, for refusals.
    pub fn describe_claims(rules: &[Rule], claims: &Claims) -> String {
        let mut names: Vec<&str> = rules
            .iter()
            .flat_map(|rule| rule.when.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .map(|name| match claims.get(name) {
                Some(value) => format!("{name}={value:?}"),
                None => format!("{name} absent"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        match value {
            Value::Object(map) => Claims::new(map),
            _ => unreachable!(),
        }
    }

    fn rule(when: &[(&str, &str)], write: &[&str], read: &[&str]) -> Rule {
        Rule {
            when: when
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            scope: Scope::Write,
            write: write.iter().map(|t| Template::parse(t).unwrap()).collect(),
            read: read.iter().map(|t| Template::parse(t).unwrap()).collect(),
            default: None,
        }
    }

    #[test]
    fn pull_request_numbers_come_from_the_ref() {
        assert_eq!(
            pull_request_number("refs/pull/42/merge").as_deref(),
            Some("42")
        );
        assert_eq!(
            pull_request_number("refs/merge-requests/7/head").as_deref(),
            Some("7")
        );
        assert_eq!(pull_request_number("refs/heads/main"), None);
        assert_eq!(pull_request_number("refs/pull/x/merge"), None);
        assert_eq!(pull_request_number("refs/pull//merge"), None);
    }

    #[test]
    fn a_pull_request_token_gets_its_own_namespace_and_reads_main() {
        let pr = claims(json!({
            "repository": "acme/web", "event_name": "pull_request",
            "ref": "refs/pull/42/merge", "run_number": 5, "ref_protected": false,
        }));
        let rule = rule(
            &[("repository", "acme/*"), ("event_name", "pull_request")],
            &["pr-{pr}"],
            &["main"],
        );
        assert!(rule.matches(&pr));
        let grant = rule.grant(&pr).unwrap();
        assert_eq!(grant.policy.describe(), "write pr-42; read main");
        assert_eq!(grant.policy.default_namespace().as_str(), "pr-42");
        assert_eq!(pr.get("run_number").as_deref(), Some("5"));
        assert_eq!(pr.get("ref_protected").as_deref(), Some("false"));
        let other = claims(json!({"repository": "evil/web", "event_name": "pull_request"}));
        assert!(!rule.matches(&other));
        let missing = claims(json!({"event_name": "pull_request"}));
        assert!(!rule.matches(&missing));
    }

    #[test]
    fn a_claim_cannot_widen_a_pattern_or_leave_its_namespace() {
        let rule = rule(&[("repository", "*")], &["branch-{ref_name}"], &[]);
        for bad in ["*", "a/b", "../main", "", "a b"] {
            let claims = claims(json!({"repository": "r", "ref_name": bad}));
            let refusal = rule.grant(&claims).unwrap_err();
            assert!(refusal.0.contains("cannot be part"), "{bad:?}: {refusal}");
        }
        let absent = claims(json!({"repository": "r"}));
        assert!(rule.grant(&absent).unwrap_err().0.contains("no value"));
        let ok = claims(json!({"repository": "r", "ref_name": "feature-1.2_x"}));
        assert_eq!(
            rule.grant(&ok).unwrap().policy.describe(),
            "write branch-feature-1.2_x"
        );
    }

    #[test]
    fn templates_are_checked_when_loaded() {
        assert!(Template::parse("pr-{pr}").is_ok());
        assert!(Template::parse("release-*").is_ok());
        for bad in ["pr-{pr", "pr-}", "pr-{PR}", "pr-{}", "a/b", ""] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
