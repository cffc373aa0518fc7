//! The cache namespace of a run: `--namespace` / `CACHECTL_NAMESPACE` /
//! `namespace` in the file, else what the CI system says the job is.
//!
//! Only a job that runs code already on the default branch may publish
//! under main's trusted names, and the event says so, not the ref: GitHub
//! runs `pull_request_target`, `workflow_run` and `issue_comment` workflows
//! on the default branch (`GITHUB_REF=refs/heads/main`), with its secrets,
//! for input a pull request controls. So trust fails closed:
//!
//! | job | namespace |
//! | --- | --- |
//! | GitHub `push`, `schedule`, `workflow_dispatch` on the default branch | `main` (trusted) |
//! | GitHub `pull_request`, `pull_request_review(_comment)`, `pull_request_target` | `pr-<number>` |
//! | GitHub `merge_group` (a merge queue's `gh-readonly-queue/<base>/pr-<n>-<sha>`) | `pr-<n>` |
//! | GitHub `issue_comment` on a pull request, `workflow_run` of a pull request's run | `pr-<number>` |
//! | any other GitHub event on the default branch, or one of the above without a number | `untrusted-<event>` |
//! | GitLab merge request (or external pull request) pipeline | `pr-<iid>` |
//! | GitLab pipeline on the default branch whose source is `push`, `schedule` or `web` | `main` (trusted) |
//! | GitLab pipeline on the default branch from any other source (`api`, `trigger`, `pipeline`, ...) | `untrusted-<source>` |
//! | another branch, on either | `branch-<name>` |
//! | a tag, on either | `tag-<name>` |
//! | anything else (a laptop) | none: the server's (or the token's) default |
//!
//! A merge queue's group runs code that is not merged yet (the group may
//! still fail or be dequeued, and never land): it is the pull request's.
//! The number comes from the event payload (`GITHUB_EVENT_PATH`) first,
//! then from `GITHUB_REF`. Branch and tag names are folded one to one into
//! the namespace alphabet: `dev` stays `branch-dev`, `feature/x` becomes
//! `branch-feature-x-` and 16 hex digits of its hash, so `feature-x` and
//! `feature/x` never share a namespace (the server's `{ref|slug}` folds
//! alike).

use std::path::Path;

use cache_proto::Namespace;
use serde::Deserialize;

/// The trusted namespace: what the default branch writes.
pub const MAIN: &str = "main";

/// Whether a run in `namespace` may publish under the trusted names
/// (`base-{key16}`): no namespace (a setup without namespaces), `default`
/// or [`MAIN`].
pub fn is_trusted(namespace: Option<&Namespace>) -> bool {
    namespace.is_none_or(|namespace| namespace.is_default() || namespace.as_str() == MAIN)
}

/// The cache namespace of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNamespace {
    /// The namespace.
    pub namespace: Namespace,
    /// Where it came from.
    pub origin: NamespaceOrigin,
}

/// Where a run's namespace came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceOrigin {
    /// Named on purpose: the flag, its variable or the file (which one).
    Named(String),
    /// Detected from the CI job (its system, event and ref).
    Detected(String),
}

/// The namespace a CI job implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The namespace.
    pub namespace: Namespace,
    /// Where it came from: the CI system, its event and ref.
    pub why: String,
    /// Set when the job is not trusted because of its event (it runs on the
    /// default branch, or its code is not merged): the line that says so.
    pub distrusted: Option<String>,
}

impl Detected {
    fn new(namespace: Namespace, why: String) -> Self {
        Self {
            namespace,
            why,
            distrusted: None,
        }
    }

    fn distrusted(mut self, reason: &str) -> Self {
        self.distrusted = Some(format!(
            "{}: cache namespace {}, not trusted: {reason} (--namespace names one on purpose)",
            self.why, self.namespace
        ));
        self
    }
}

/// The namespace a CI job's environment implies, and why; `None` outside a
/// CI system cachectl knows.
pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Option<Detected> {
    if env("GITHUB_ACTIONS").as_deref() == Some("true") {
        return github(env);
    }
    if env("GITLAB_CI").as_deref() == Some("true") {
        return gitlab(env);
    }
    None
}

/// The parts of a GitHub event payload (`GITHUB_EVENT_PATH`) that name the
/// default branch and the pull request a job is for.
#[derive(Debug, Default, Deserialize)]
struct Payload {
    repository: Option<Repository>,
    pull_request: Option<Numbered>,
    issue: Option<Issue>,
    workflow_run: Option<WorkflowRun>,
    merge_group: Option<MergeGroup>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Numbered {
    number: u64,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    /// Present when the issue is a pull request.
    pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct WorkflowRun {
    #[serde(default)]
    pull_requests: Vec<Numbered>,
}

#[derive(Debug, Deserialize)]
struct MergeGroup {
    head_ref: Option<String>,
}

impl Payload {
    /// The payload at `path`; an unreadable one is empty (every decision
    /// it feeds then fails closed).
    fn read(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or_default()
    }

    fn default_branch(&self) -> Option<&str> {
        self.repository.as_ref()?.default_branch.as_deref()
    }
}

/// N of `refs/pull/N/merge` or `refs/pull/N/head`.
fn pull_number_of_ref(reference: &str) -> Option<u64> {
    reference
        .strip_prefix("refs/pull/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// N of a merge queue's `refs/heads/gh-readonly-queue/<base>/pr-N-<sha>`.
fn merge_queue_number(reference: &str) -> Option<u64> {
    let rest = reference.strip_prefix("refs/heads/gh-readonly-queue/")?;
    let (_, last) = rest.rsplit_once('/')?;
    last.strip_prefix("pr-")?.split('-').next()?.parse().ok()
}

fn pull_request(number: u64, why: String) -> Option<Detected> {
    Some(Detected::new(
        Namespace::parse(&format!("pr-{number}")).ok()?,
        why,
    ))
}

// What GitHub sets GITHUB_REF to, per event ("Events that trigger
// workflows", docs.github.com):
//   push                          "Updated ref"
//   schedule                      "Default branch"
//   workflow_dispatch             "Branch or tag that received dispatch"
//   pull_request                  "PR merge branch refs/pull/PULL_REQUEST_NUMBER/merge"
//   pull_request_review(_comment) "PR merge branch refs/pull/PULL_REQUEST_NUMBER/merge"
//   pull_request_target           "PR base branch"
//   merge_group                   "Ref of the merge group"
//   issue_comment                 "Default branch"
//   workflow_run                  "Default branch"
//   repository_dispatch, check_run, issues, ... "Default branch"
//   release                       "Tag ref of release refs/tags/<tag_name>"
fn github(env: &dyn Fn(&str) -> Option<String>) -> Option<Detected> {
    let event = env("GITHUB_EVENT_NAME").unwrap_or_default();
    let reference = env("GITHUB_REF").unwrap_or_default();
    let payload = env("GITHUB_EVENT_PATH")
        .map(|path| Payload::read(Path::new(&path)))
        .unwrap_or_default();
    let why = format!("GitHub Actions {event} event on {reference}");
    let pull_request_number = || {
        payload
            .pull_request
            .as_ref()
            .map(|pr| pr.number)
            .or_else(|| pull_number_of_ref(&reference))
    };
    let number = match event.as_str() {
        // Code already on the ref: trusted on the default branch.
        "push" | "schedule" | "workflow_dispatch" => {
            return github_ref(&reference, &payload, why, None);
        }
        "pull_request" | "pull_request_review" | "pull_request_review_comment" => {
            if let Some(number) = pull_request_number() {
                return pull_request(number, why);
            }
            None
        }
        "pull_request_target" => pull_request_number(),
        "merge_group" => payload
            .merge_group
            .as_ref()
            .and_then(|group| group.head_ref.as_deref())
            .and_then(merge_queue_number)
            .or_else(|| merge_queue_number(&reference)),
        "issue_comment" => payload
            .issue
            .as_ref()
            .filter(|issue| issue.pull_request.is_some())
            .map(|issue| issue.number),
        "workflow_run" => payload
            .workflow_run
            .as_ref()
            .and_then(|run| run.pull_requests.first())
            .map(|pr| pr.number),
        _ => None,
    };
    let reason = match event.as_str() {
        "pull_request_target" | "issue_comment" | "workflow_run" => {
            "this event runs with the default branch's secrets on input a pull request controls"
        }
        "merge_group" => "a merge queue's group is not merged yet",
        "" => "GITHUB_EVENT_NAME is not set",
        _ => "only push, schedule and workflow_dispatch runs of the default branch are trusted",
    };
    match number {
        Some(number) => Some(pull_request(number, why)?.distrusted(reason)),
        None => github_ref(&reference, &payload, why, Some((&event, reason))),
    }
}

/// The namespace of a GitHub job by its ref: a tag's, a branch's, or (on
/// the default branch) `main`, unless the event is `distrusted` (its name
/// and the reason), which makes it `untrusted-<event>` there.
fn github_ref(
    reference: &str,
    payload: &Payload,
    why: String,
    distrusted: Option<(&str, &str)>,
) -> Option<Detected> {
    if let Some(tag) = reference.strip_prefix("refs/tags/") {
        return Some(Detected::new(folded("tag", tag)?, why));
    }
    let untrusted = |(event, reason): (&str, &str)| {
        Some(Detected::new(folded("untrusted", event)?, why.clone()).distrusted(reason))
    };
    let Some(branch) = reference.strip_prefix("refs/heads/") else {
        // No branch and no tag (a dispatch by commit, an event without a ref).
        return untrusted(distrusted.unwrap_or(("ref", "the job names no branch or tag")));
    };
    let is_default = match payload.default_branch() {
        Some(default) => default == branch,
        None => matches!(branch, "main" | "master"),
    };
    if !is_default {
        return Some(Detected::new(folded("branch", branch)?, why));
    }
    match distrusted {
        None => Some(Detected::new(Namespace::parse(MAIN).ok()?, why)),
        Some(distrusted) => untrusted(distrusted),
    }
}

// GitLab's predefined variables: CI_PIPELINE_SOURCE is push, web, schedule,
// api, external, chat, webide, merge_request_event,
// external_pull_request_event, parent_pipeline, pipeline, trigger, ...;
// CI_COMMIT_BRANCH is set in branch pipelines only (not merge request or
// tag pipelines).
fn gitlab(env: &dyn Fn(&str) -> Option<String>) -> Option<Detected> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    let source = set("CI_PIPELINE_SOURCE").unwrap_or_default();
    for iid in ["CI_MERGE_REQUEST_IID", "CI_EXTERNAL_PULL_REQUEST_IID"] {
        if let Some(iid) = set(iid) {
            let number = iid.parse().ok()?;
            return pull_request(number, format!("GitLab CI merge request !{iid}"));
        }
    }
    if let Some(tag) = set("CI_COMMIT_TAG") {
        return Some(Detected::new(
            folded("tag", &tag)?,
            format!("GitLab CI tag {tag}"),
        ));
    }
    let branch = set("CI_COMMIT_BRANCH")?;
    let why = format!("GitLab CI {source} pipeline on branch {branch}");
    if set("CI_DEFAULT_BRANCH").as_deref() != Some(branch.as_str()) {
        return Some(Detected::new(folded("branch", &branch)?, why));
    }
    if matches!(source.as_str(), "push" | "schedule" | "web") {
        return Some(Detected::new(Namespace::parse(MAIN).ok()?, why));
    }
    let reason = if source.is_empty() {
        "CI_PIPELINE_SOURCE is not set"
    } else {
        "only push, schedule and web pipelines of the default branch are trusted"
    };
    Some(Detected::new(folded("untrusted", &source)?, why).distrusted(reason))
}

/// `{kind}-{name}` with the name folded one to one into the namespace
/// alphabet ([`cache_proto::fold`], as the server's `{ref|slug}`): a plain
/// name stays, any other gets a hash of itself, so two branches never share
/// a namespace. An empty name leaves `{kind}` alone.
fn folded(kind: &str, name: &str) -> Option<Namespace> {
    if name.is_empty() {
        return Namespace::parse(kind).ok();
    }
    let room = cache_proto::namespace::MAX_LEN.saturating_sub(kind.len() + 1);
    Namespace::parse(&format!("{kind}-{}", cache_proto::fold::fold(name, room))).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn detection(vars: &[(&str, &str)]) -> Option<Detected> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        detect(&|name| vars.get(name).cloned())
    }

    fn detected(vars: &[(&str, &str)]) -> Option<String> {
        detection(vars).map(|detected| detected.namespace.to_string())
    }

    /// A GitHub Actions job of `event` on `reference`, with `payload` as
    /// its event file (`None`: no file).
    fn github(event: &str, reference: &str, payload: Option<&str>) -> Option<Detected> {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("event.json");
        let mut vars = vec![
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", event),
            ("GITHUB_REF", reference),
        ];
        let path_text = path.display().to_string();
        if let Some(payload) = payload {
            std::fs::write(&path, payload).unwrap();
            vars.push(("GITHUB_EVENT_PATH", &path_text));
        }
        detection(&vars)
    }

    /// The namespace, and whether a line says why the job is not trusted.
    fn github_ns(event: &str, reference: &str, payload: Option<&str>) -> (String, bool) {
        let detected = github(event, reference, payload).expect("a namespace");
        (
            detected.namespace.to_string(),
            detected.distrusted.is_some(),
        )
    }

    const REPOSITORY: &str = r#""repository": {"default_branch": "main"}"#;

    #[test]
    fn github_events_that_run_the_default_branch_s_own_code_are_main() {
        let payload = format!("{{{REPOSITORY}}}");
        // push: GITHUB_REF is "Updated ref".
        let main = ("main".to_owned(), false);
        assert_eq!(github_ns("push", "refs/heads/main", Some(&payload)), main);
        // schedule: "Default branch".
        assert_eq!(
            github_ns("schedule", "refs/heads/main", Some(&payload)),
            main
        );
        // workflow_dispatch: "Branch or tag that received dispatch".
        assert_eq!(
            github_ns("workflow_dispatch", "refs/heads/main", Some(&payload)),
            main
        );
        assert_eq!(
            github_ns("workflow_dispatch", "refs/heads/dev", Some(&payload)),
            ("branch-dev".to_owned(), false)
        );
        // Without a payload, main or master is taken as the default.
        assert_eq!(github_ns("push", "refs/heads/master", None), main);
    }

    #[test]
    fn github_pull_request_events_are_their_pull_request() {
        // pull_request, pull_request_review, pull_request_review_comment:
        // GITHUB_REF is "PR merge branch refs/pull/PULL_REQUEST_NUMBER/merge".
        for event in [
            "pull_request",
            "pull_request_review",
            "pull_request_review_comment",
        ] {
            assert_eq!(
                github_ns(event, "refs/pull/42/merge", None),
                ("pr-42".to_owned(), false),
                "{event}"
            );
        }
        // The payload's number wins over the ref.
        let payload = format!(r#"{{{REPOSITORY}, "pull_request": {{"number": 43}}}}"#);
        assert_eq!(
            github_ns("pull_request", "refs/pull/42/merge", Some(&payload)).0,
            "pr-43"
        );
    }

    #[test]
    fn pull_request_target_on_the_default_branch_is_its_pull_request_and_says_why() {
        // pull_request_target: GITHUB_REF is "PR base branch", i.e. main.
        let payload =
            format!(r#"{{{REPOSITORY}, "number": 42, "pull_request": {{"number": 42}}}}"#);
        let detected = github("pull_request_target", "refs/heads/main", Some(&payload)).unwrap();
        assert_eq!(detected.namespace.as_str(), "pr-42");
        assert!(!is_trusted(Some(&detected.namespace)));
        let line = detected.distrusted.unwrap();
        assert!(
            line.contains("pull_request_target") && line.contains("not trusted"),
            "{line}"
        );
        // Without its payload it is still not main's.
        assert_eq!(
            github_ns("pull_request_target", "refs/heads/main", None),
            ("untrusted-pull_request_target".to_owned(), true)
        );
    }

    #[test]
    fn workflow_run_issue_comment_and_merge_group_are_never_main() {
        // workflow_run: "Default branch"; the triggering run's pull
        // requests are in the payload (empty for a fork's).
        let run_of_pr = format!(
            r#"{{{REPOSITORY}, "workflow_run": {{"event": "pull_request", "pull_requests": [{{"number": 9}}]}}}}"#
        );
        assert_eq!(
            github_ns("workflow_run", "refs/heads/main", Some(&run_of_pr)),
            ("pr-9".to_owned(), true)
        );
        let run_of_fork = format!(
            r#"{{{REPOSITORY}, "workflow_run": {{"event": "pull_request", "head_branch": "main", "pull_requests": []}}}}"#
        );
        assert_eq!(
            github_ns("workflow_run", "refs/heads/main", Some(&run_of_fork)),
            ("untrusted-workflow_run".to_owned(), true)
        );
        // issue_comment: "Default branch"; a pull request's issue carries
        // a `pull_request` object.
        let on_pr = format!(
            r#"{{{REPOSITORY}, "issue": {{"number": 12, "pull_request": {{"url": "https://api.github.com/repos/acme/web/pulls/12"}}}}}}"#
        );
        assert_eq!(
            github_ns("issue_comment", "refs/heads/main", Some(&on_pr)),
            ("pr-12".to_owned(), true)
        );
        let on_issue = format!(r#"{{{REPOSITORY}, "issue": {{"number": 3}}}}"#);
        assert_eq!(
            github_ns("issue_comment", "refs/heads/main", Some(&on_issue)),
            ("untrusted-issue_comment".to_owned(), true)
        );
        // merge_group: "Ref of the merge group".
        let queue =
            "refs/heads/gh-readonly-queue/main/pr-77-0123456789abcdef0123456789abcdef01234567";
        let group = format!(r#"{{{REPOSITORY}, "merge_group": {{"head_ref": "{queue}"}}}}"#);
        assert_eq!(
            github_ns("merge_group", queue, Some(&group)),
            ("pr-77".to_owned(), true)
        );
        assert_eq!(github_ns("merge_group", queue, None).0, "pr-77");
    }

    #[test]
    fn other_and_unknown_github_events_on_the_default_branch_fail_closed() {
        let payload = format!("{{{REPOSITORY}}}");
        for event in [
            "repository_dispatch",
            "check_run",
            "deployment",
            "a_future_event",
        ] {
            let (namespace, said) = github_ns(event, "refs/heads/main", Some(&payload));
            assert_eq!(namespace, format!("untrusted-{event}"));
            assert!(said, "{event}");
        }
        assert_eq!(
            github_ns("", "refs/heads/main", None),
            ("untrusted".to_owned(), true)
        );
        // A dispatch by commit names no branch.
        assert_eq!(
            github_ns("workflow_dispatch", "", None),
            ("untrusted-ref".to_owned(), true)
        );
        // Elsewhere than the default branch they keep the branch's or
        // tag's namespace; release: "refs/tags/<tag_name>".
        assert_eq!(
            github_ns("repository_dispatch", "refs/heads/dev", Some(&payload)).0,
            "branch-dev"
        );
        assert_eq!(github_ns("release", "refs/tags/v1.2", None).0, "tag-v1.2");
    }

    #[test]
    fn github_branches_tags_and_the_payload_s_default_branch() {
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
        let folded = push("feature/Login+x").unwrap();
        assert!(folded.starts_with("branch-feature-Login-x-"), "{folded}");
        assert_ne!(push("feature-Login-x").unwrap(), folded);
        assert_eq!(
            github_ns("push", "refs/tags/v1.2", None),
            ("tag-v1.2".to_owned(), false)
        );
    }

    /// A GitLab CI job with `vars` on top of GITLAB_CI and the default
    /// branch `main`.
    fn gitlab(vars: &[(&str, &str)]) -> (String, bool) {
        let mut all = vec![("GITLAB_CI", "true"), ("CI_DEFAULT_BRANCH", "main")];
        all.extend_from_slice(vars);
        let detected = detection(&all).expect("a namespace");
        (
            detected.namespace.to_string(),
            detected.distrusted.is_some(),
        )
    }

    #[test]
    fn gitlab_trusts_only_push_schedule_and_web_pipelines_of_the_default_branch() {
        for source in ["push", "schedule", "web"] {
            assert_eq!(
                gitlab(&[("CI_PIPELINE_SOURCE", source), ("CI_COMMIT_BRANCH", "main")]),
                ("main".to_owned(), false),
                "{source}"
            );
        }
        for source in ["api", "trigger", "pipeline", "parent_pipeline", "chat"] {
            assert_eq!(
                gitlab(&[("CI_PIPELINE_SOURCE", source), ("CI_COMMIT_BRANCH", "main")]),
                (format!("untrusted-{source}"), true),
                "{source}"
            );
        }
        assert_eq!(
            gitlab(&[("CI_COMMIT_BRANCH", "main")]),
            ("untrusted".to_owned(), true)
        );
    }

    #[test]
    fn gitlab_merge_requests_branches_and_tags() {
        // Merge request pipelines set CI_MERGE_REQUEST_IID and no
        // CI_COMMIT_BRANCH; merged results and merge trains likewise.
        assert_eq!(
            gitlab(&[
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ("CI_MERGE_REQUEST_IID", "12"),
            ]),
            ("pr-12".to_owned(), false)
        );
        assert_eq!(
            gitlab(&[
                ("CI_PIPELINE_SOURCE", "external_pull_request_event"),
                ("CI_EXTERNAL_PULL_REQUEST_IID", "4"),
                ("CI_COMMIT_BRANCH", "main"),
            ])
            .0,
            "pr-4"
        );
        assert_eq!(
            gitlab(&[("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_BRANCH", "dev")]).0,
            "branch-dev"
        );
        assert_eq!(
            gitlab(&[("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_TAG", "v2")]).0,
            "tag-v2"
        );
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
        assert!(!is_trusted(Some(
            &Namespace::parse("untrusted-workflow_run").unwrap()
        )));
    }
}
