//! Claims to rights: the first rule whose `when` matches a verified ID
//! token's claims gives its scope and namespace policy, with placeholders
//! filled from the token (`pr-{pr}`, `branch-{ref|slug}`: see
//! [`super::template`]).

use std::collections::BTreeMap;

use super::claims::Claims;
use super::template::{Template, Unfilled};
use crate::index::Scope;
use crate::namespaces::NamespacePolicy;
use cache_proto::glob_matches;

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
    use serde_json::Value;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        Claims::of(value)
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

    /// An ID token of a GitLab CI job, with GitLab's claim shapes: every
    /// value a string (`ref_protected` "true"/"false", ids as text), `ref`
    /// the bare branch name, no merge-request number anywhere.
    fn gitlab_job(source: &str, branch: &str, protected: bool) -> Claims {
        claims(json!({
            "namespace_id": "72", "namespace_path": "acme",
            "project_id": "20", "project_path": "acme/web",
            "user_login": "dev", "pipeline_id": "574", "job_id": "302",
            "pipeline_source": source,
            "ref": branch, "ref_type": "branch",
            "ref_path": format!("refs/heads/{branch}"),
            "ref_protected": protected.to_string(),
            "sub": format!("project_path:acme/web:ref_type:branch:ref:{branch}"),
        }))
    }

    #[test]
    fn gitlab_merge_requests_from_any_branch_get_their_own_namespace() {
        let main = rule(
            &[
                ("project_path", "acme/web"),
                ("ref", "main"),
                ("ref_protected", "true"),
                ("pipeline_source", "push"),
            ],
            &["main"],
            &[],
        );
        let merge_request = rule(
            &[
                ("project_path", "acme/web"),
                ("pipeline_source", "merge_request_event"),
            ],
            &["branch-{ref|slug}"],
            &["main"],
        );
        let rules = [main, merge_request];
        let grant = |claims: &Claims| {
            let rule = rules.iter().find(|rule| rule.matches(claims)).unwrap();
            rule.grant(claims).unwrap().policy
        };
        let pushed = grant(&gitlab_job("push", "main", true));
        assert_eq!(pushed.describe(), "write main");
        // Unprotected main, or main from the API, is not main's rule.
        assert!(!rules[0].matches(&gitlab_job("push", "main", false)));
        assert!(!rules[0].matches(&gitlab_job("api", "main", true)));

        let login = grant(&gitlab_job("merge_request_event", "feature/login", false));
        let own = login.default_namespace();
        assert!(own.as_str().starts_with("branch-feature-login-"), "{own}");
        assert!(login.may_write(&own));
        let main = cache_proto::Namespace::parse("main").unwrap();
        assert!(login.may_read(&main) && !login.may_write(&main));

        // Branches whose names fold alike never write each other's.
        let look_alikes = [
            "feature-login",
            "feature.login",
            "feature_login",
            "Feature/Login",
            "feature//login",
        ];
        for branch in look_alikes {
            let other = grant(&gitlab_job("merge_request_event", branch, false));
            let theirs = other.default_namespace();
            assert_ne!(theirs, own, "{branch}");
            assert!(!other.may_write(&own), "{branch} may write {own}");
            assert!(!other.may_read(&own), "{branch} may read {own}");
            assert!(
                !login.may_write(&theirs),
                "feature/login may write {theirs}"
            );
        }
        let long = "x/".repeat(50);
        let long = grant(&gitlab_job("merge_request_event", &long, false));
        assert!(long.default_namespace().as_str().len() <= 64);
    }
}
