//! The cache namespace of a run: `--namespace` / `CACHECTL_NAMESPACE` /
//! `namespace` in the file, else what the CI system says the job is.
//!
//! | job | namespace |
//! | --- | --- |
//! | GitHub Actions, `pull_request`/`pull_request_target` event | `pr-<number>` |
//! | GitHub Actions, push to the repository's default branch | `main` |
//! | GitHub Actions, another branch | `branch-<name>` |
//! | GitLab CI, merge request pipeline | `pr-<iid>` |
//! | GitLab CI, the default branch | `main` |
//! | GitLab CI, another branch | `branch-<name>` |
//! | a tag, on either | `tag-<name>` |
//! | anything else (a laptop) | none: the server's (or the token's) default |
//!
//! Branch and tag names are folded into the namespace alphabet
//! (`feature/x` → `branch-feature-x`), cut to fit.

use std::path::Path;

use cache_proto::Namespace;

/// The trusted namespace: what the default branch writes.
pub const MAIN: &str = "main";

/// Whether a run in `namespace` may publish under the trusted names
/// (`base-{key16}`): no namespace (a setup without namespaces), `default`
/// or [`MAIN`].
pub fn is_trusted(namespace: Option<&Namespace>) -> bool {
    namespace.is_none_or(|namespace| namespace.is_default() || namespace.as_str() == MAIN)
}

/// The namespace a CI job's environment implies, and why; `None` outside a
/// CI system cachectl knows.
pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Option<(Namespace, String)> {
    if env("GITHUB_ACTIONS").as_deref() == Some("true") {
        return github(env);
    }
    if env("GITLAB_CI").as_deref() == Some("true") {
        return gitlab(env);
    }
    None
}

fn github(env: &dyn Fn(&str) -> Option<String>) -> Option<(Namespace, String)> {
    let event = env("GITHUB_EVENT_NAME").unwrap_or_default();
    let reference = env("GITHUB_REF").unwrap_or_default();
    if event.starts_with("pull_request") {
        // refs/pull/42/merge (pull_request) or refs/pull/42/head.
        let number = reference
            .strip_prefix("refs/pull/")
            .and_then(|rest| rest.split('/').next())
            .filter(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))?;
        let why = format!("GitHub Actions {event} event on {reference}");
        return Some((Namespace::parse(&format!("pr-{number}")).ok()?, why));
    }
    if let Some(tag) = reference.strip_prefix("refs/tags/") {
        let why = format!("GitHub Actions {event} event on tag {tag}");
        return Some((folded("tag", tag)?, why));
    }
    let branch = reference.strip_prefix("refs/heads/")?;
    let default = env("GITHUB_EVENT_PATH").and_then(|path| default_branch(Path::new(&path)));
    let is_default = match &default {
        Some(default) => default == branch,
        None => matches!(branch, "main" | "master"),
    };
    if is_default {
        let why = format!("GitHub Actions {event} event on the default branch {branch}");
        return Some((Namespace::parse(MAIN).ok()?, why));
    }
    let why = format!("GitHub Actions {event} event on branch {branch}");
    Some((folded("branch", branch)?, why))
}

/// `repository.default_branch` of the GitHub event payload.
fn default_branch(event_path: &Path) -> Option<String> {
    let text = std::fs::read(event_path).ok()?;
    let event: serde_json::Value = serde_json::from_slice(&text).ok()?;
    event["repository"]["default_branch"]
        .as_str()
        .map(str::to_owned)
}

fn gitlab(env: &dyn Fn(&str) -> Option<String>) -> Option<(Namespace, String)> {
    if let Some(iid) = env("CI_MERGE_REQUEST_IID").filter(|iid| !iid.is_empty()) {
        let why = format!("GitLab CI merge request !{iid}");
        return Some((Namespace::parse(&format!("pr-{iid}")).ok()?, why));
    }
    if let Some(tag) = env("CI_COMMIT_TAG").filter(|tag| !tag.is_empty()) {
        return Some((folded("tag", &tag)?, format!("GitLab CI tag {tag}")));
    }
    let branch = env("CI_COMMIT_BRANCH").filter(|branch| !branch.is_empty())?;
    if env("CI_DEFAULT_BRANCH").as_deref() == Some(branch.as_str()) {
        let why = format!("GitLab CI pipeline on the default branch {branch}");
        return Some((Namespace::parse(MAIN).ok()?, why));
    }
    let why = format!("GitLab CI pipeline on branch {branch}");
    Some((folded("branch", &branch)?, why))
}

/// `{kind}-{name}` in the namespace alphabet: every other character becomes
/// `-`, runs of `-` collapse, and the result is cut to the longest namespace.
fn folded(kind: &str, name: &str) -> Option<Namespace> {
    let mut text = format!("{kind}-");
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && text.ends_with('-')) {
            text.push(c);
        }
    }
    text.truncate(cache_proto::namespace::MAX_LEN);
    let text = text.trim_end_matches(['-', '.']);
    Namespace::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn detected(vars: &[(&str, &str)]) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        detect(&|name| vars.get(name).cloned()).map(|(namespace, _)| namespace.to_string())
    }

    #[test]
    fn github_pull_requests_default_branch_and_others() {
        let pr = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/42/merge"),
        ];
        assert_eq!(detected(&pr).as_deref(), Some("pr-42"));
        let target = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "pull_request_target"),
            ("GITHUB_REF", "refs/pull/7/head"),
        ];
        assert_eq!(detected(&target).as_deref(), Some("pr-7"));

        let folder = tempfile::tempdir().unwrap();
        let event = folder.path().join("event.json");
        std::fs::write(&event, r#"{"repository": {"default_branch": "trunk"}}"#).unwrap();
        let event = event.display().to_string();
        let push = |branch: &str| {
            detected(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_EVENT_NAME", "push"),
                ("GITHUB_REF", &format!("refs/heads/{branch}")),
                ("GITHUB_EVENT_PATH", &event),
            ])
        };
        assert_eq!(push("trunk").as_deref(), Some("main"));
        // With the payload saying trunk, a branch named main is not trusted.
        assert_eq!(push("main").as_deref(), Some("branch-main"));
        assert_eq!(
            push("feature/Login+x").as_deref(),
            Some("branch-feature-Login-x")
        );
        let no_payload = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/master"),
        ];
        assert_eq!(detected(&no_payload).as_deref(), Some("main"));
        let tag = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/tags/v1.2"),
        ];
        assert_eq!(detected(&tag).as_deref(), Some("tag-v1.2"));
    }

    #[test]
    fn gitlab_merge_requests_default_branch_and_others() {
        let mr = [
            ("GITLAB_CI", "true"),
            ("CI_MERGE_REQUEST_IID", "12"),
            ("CI_COMMIT_BRANCH", "x"),
        ];
        assert_eq!(detected(&mr).as_deref(), Some("pr-12"));
        let main = [
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_DEFAULT_BRANCH", "main"),
        ];
        assert_eq!(detected(&main).as_deref(), Some("main"));
        let other = [
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_BRANCH", "dev"),
            ("CI_DEFAULT_BRANCH", "main"),
        ];
        assert_eq!(detected(&other).as_deref(), Some("branch-dev"));
    }

    #[test]
    fn outside_ci_there_is_none_and_long_names_fit() {
        assert_eq!(detected(&[]), None);
        assert_eq!(detected(&[("CI", "true")]), None);
        let long = folded("branch", &"x/".repeat(100)).unwrap();
        assert!(long.as_str().len() <= cache_proto::namespace::MAX_LEN);
        assert!(is_trusted(None));
        assert!(is_trusted(Some(&Namespace::parse("main").unwrap())));
        assert!(!is_trusted(Some(&Namespace::parse("pr-1").unwrap())));
    }
}
