//! Namespace templates of the OIDC rules: `pr-{pr}`, `branch-{ref|slug}`,
//! `main`, `release-*`, filled from a verified token's claims.
//!
//! - `{claim}` stands for the value as it is, which must already be 1 to 64
//!   characters of `[A-Za-z0-9._-]`; any other value refuses the token
//!   (`feature/login` cannot be part of a namespace).
//! - `{claim|slug}` stands for the value folded one to one into the
//!   namespace alphabet ([`cache_proto::fold`]): a plain value that fits
//!   stays as it is, any other (`feature/login`, uppercase or 100
//!   characters long) becomes its folded text and a hash of the original,
//!   so two values never fill a template alike.
//!
//! Either way a claim can never widen a pattern (`*`) or reach another
//! namespace's path.

use std::fmt;

use cache_proto::fold::{MIN_ROOM, fold};
use cache_proto::namespace::MAX_LEN;
use cache_proto::{Namespace, NamespacePattern};

use super::claims::Claims;

/// A namespace or pattern with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
    /// Characters each `{claim|slug}` may fill: what the rest leaves.
    slug_room: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{claim}`: the value as it is, refused unless plain.
    Claim(String),
    /// `{claim|slug}`: the value folded into the template's `slug_room`.
    Slug(String),
}

/// The filter that folds a value: `{ref|slug}`.
const SLUG: &str = "slug";

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without `}`, a name that is not a claim name, or an unknown
    /// filter.
    #[error(
        "{0:?}: a placeholder is {{claim}} or {{claim|slug}}, with a claim name of a-z, 0-9 and _"
    )]
    Placeholder(String),
    /// Its `{claim|slug}` placeholders have too little room left.
    #[error(
        "{text:?} leaves {room} characters for each {{claim|slug}}: a folded value needs {MIN_ROOM} of the {MAX_LEN} a namespace has"
    )]
    Room {
        /// The template.
        text: String,
        /// Characters each would have.
        room: usize,
    },
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
pub struct Unfilled(pub(super) String);

impl fmt::Display for Unfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A placeholder as written: a claim and maybe the slug filter.
enum Placeholder<'a> {
    Claim(&'a str),
    Slug(&'a str),
}

fn placeholder(inner: &str) -> Option<Placeholder<'_>> {
    let (name, filter) = match inner.split_once('|') {
        Some((name, filter)) => (name.trim(), Some(filter.trim())),
        None => (inner, None),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match (valid, filter) {
        (false, _) => None,
        (true, None) => Some(Placeholder::Claim(name)),
        (true, Some(SLUG)) => Some(Placeholder::Slug(name)),
        (true, Some(_)) => None,
    }
}

impl Template {
    /// Parses `pr-{pr}`, `branch-{ref|slug}`, `main`, `branch-*`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let bad = || TemplateError::Placeholder(text.to_owned());
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(bad)?;
            match placeholder(&after[..close]).ok_or_else(bad)? {
                Placeholder::Claim(name) => parts.push(Part::Claim(name.to_owned())),
                Placeholder::Slug(name) => parts.push(Part::Slug(name.to_owned())),
            }
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(bad());
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        // What the literals and plain placeholders (one character at least)
        // leave, shared by the folded ones.
        let slugs = parts
            .iter()
            .filter(|part| matches!(part, Part::Slug(_)))
            .count();
        let taken: usize = parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.len(),
                Part::Claim(_) => 1,
                Part::Slug(_) => 0,
            })
            .sum();
        let slug_room = MAX_LEN.saturating_sub(taken) / slugs.max(1);
        if slugs > 0 && slug_room < MIN_ROOM {
            return Err(TemplateError::Room {
                text: text.to_owned(),
                room: slug_room,
            });
        }
        let template = Self {
            text: text.to_owned(),
            parts,
            slug_room,
        };
        let sample = template.fill_with(|_| Ok("1".to_owned()));
        let sample = sample.unwrap_or_default();
        NamespacePattern::parse(&sample).map_err(|e| TemplateError::Namespace {
            text: text.to_owned(),
            problem: e.to_string(),
        })?;
        Ok(template)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn fill_with(
        &self,
        mut value: impl FnMut(&str) -> Result<String, Unfilled>,
    ) -> Result<String, Unfilled> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(literal) => text.push_str(literal),
                Part::Claim(name) => {
                    let value = value(name)?;
                    if !is_plain(&value) {
                        return Err(Unfilled(format!(
                            "claim {name} = {value:?} cannot be part of a namespace \
                             ({{{name}|slug}} folds it into one)"
                        )));
                    }
                    text.push_str(&value);
                }
                Part::Slug(claim) => text.push_str(&fold(&value(claim)?, self.slug_room)),
            }
        }
        Ok(text)
    }

    /// The text with every placeholder filled from `claims`.
    fn fill(&self, claims: &Claims) -> Result<String, Unfilled> {
        self.fill_with(|name| {
            claims
                .get(name)
                .ok_or_else(|| Unfilled(format!("the token has no value for {{{name}}}")))
        })
    }

    /// The pattern `claims` make of it.
    pub fn pattern(&self, claims: &Claims) -> Result<NamespacePattern, Unfilled> {
        let text = self.fill(claims)?;
        NamespacePattern::parse(&text).map_err(|e| Unfilled(format!("{text:?}: {e}")))
    }

    /// The namespace `claims` make of it.
    pub fn namespace(&self, claims: &Claims) -> Result<Namespace, Unfilled> {
        let text = self.fill(claims)?;
        Namespace::parse(&text).map_err(|e| Unfilled(format!("{text:?}: {e}")))
    }
}

/// Whether a claim value may stand in a namespace as it is.
fn is_plain(value: &str) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claims(value: Value) -> Claims {
        Claims::of(value)
    }

    fn filled(template: &str, claims: &Claims) -> Result<String, String> {
        Template::parse(template)
            .map_err(|e| e.to_string())?
            .namespace(claims)
            .map(|namespace| namespace.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn templates_are_checked_when_loaded() {
        for good in [
            "pr-{pr}",
            "release-*",
            "branch-{ref|slug}",
            "{namespace_path|slug}-{ref|slug}",
            "mr-{ref | slug}",
        ] {
            assert!(Template::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "pr-{pr",
            "pr-}",
            "pr-{PR}",
            "pr-{}",
            "a/b",
            "",
            "b-{ref|upper}",
            "b-{ref|}",
            "b-{|slug}",
        ] {
            let error = Template::parse(bad).unwrap_err();
            assert!(!matches!(error, TemplateError::Room { .. }), "{bad}");
        }
    }

    #[test]
    fn a_template_must_leave_a_folded_value_its_room() {
        let long = format!("{}-{{ref|slug}}", "x".repeat(50));
        let error = Template::parse(&long).unwrap_err();
        assert!(
            matches!(error, TemplateError::Room { room: 13, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("needs 18"), "{error}");
        let four = "{a|slug}{b|slug}{c|slug}{d|slug}";
        assert!(matches!(
            Template::parse(four),
            Err(TemplateError::Room { room: 16, .. })
        ));
        assert!(Template::parse("{a|slug}{b|slug}{c|slug}").is_ok());
    }

    #[test]
    fn slug_placeholders_fill_with_every_gitlab_branch_name() {
        let template = "branch-{ref|slug}";
        let job = |reference: &str| claims(json!({"ref": reference, "ref_type": "branch"}));
        assert_eq!(filled(template, &job("main")).unwrap(), "branch-main");
        assert_eq!(
            filled(template, &job("fix_1.2-x")).unwrap(),
            "branch-fix_1.2-x"
        );
        let names = [
            "feature/login",
            "feature-login",
            "feature.login",
            "feature_login",
            "Feature/Login",
            "FEATURE-LOGIN",
            "release/1.0",
            "deps/npm/left-pad-1.3.0",
            &"a".repeat(100),
            &format!("{}b", "a".repeat(99)),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            let namespace = filled(template, &job(name)).unwrap();
            assert!(namespace.len() <= MAX_LEN, "{name} → {namespace}");
            assert!(seen.insert(namespace.clone()), "{name} → {namespace} again");
        }
        let login = filled(template, &job("feature/login")).unwrap();
        assert!(login.starts_with("branch-feature-login-"), "{login}");
    }

    #[test]
    fn plain_placeholders_refuse_what_slug_would_fold() {
        let job = claims(json!({"ref": "feature/login"}));
        let refusal = filled("branch-{ref}", &job).unwrap_err();
        assert!(
            refusal.contains("cannot be part of a namespace"),
            "{refusal}"
        );
        assert!(refusal.contains("{ref|slug}"), "{refusal}");
        let absent = filled("branch-{ref|slug}", &claims(json!({}))).unwrap_err();
        assert!(absent.contains("no value for {ref}"), "{absent}");
    }

    #[test]
    fn a_folded_value_never_widens_a_pattern() {
        let template = Template::parse("branch-{ref|slug}").unwrap();
        for value in ["*", "a*", "../main", "main/*"] {
            let pattern = template.pattern(&claims(json!({"ref": value}))).unwrap();
            assert!(!pattern.as_str().contains('*'), "{value} → {pattern}");
            assert!(pattern.literal().is_some());
        }
    }
}
