//! What `cachectl gc` keeps and deletes, decided from an inventory alone
//! (no I/O here, so every rule is unit-tested).
//!
//! - Deploy tags (`T.deploy-TIME`) of each app tag `T`: the newest
//!   `keep_deploys`, and every one younger than `keep_for`, are kept.
//! - Base tags (`base-{key16}[-{namespace}]`): kept when a kept image uses
//!   the base (its config's base-digest label names the base or one of its
//!   index children), or when they are the base of the current inputs.
//! - Every other tag is kept: gc only ever deletes tags cachectl made.
//! - Nothing reachable from a kept tag is deleted: not an index's child,
//!   not a base a kept image names, not a manifest another kept tag shares
//!   (deleting a manifest deletes every tag on it).
//! - An index that goes takes its children along, unless something kept
//!   reaches them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::deploys::DeployTag;
use super::inventory::ManifestInfo;

/// One repository (or layout) as inventoried.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    /// Its name, for the report.
    pub name: String,
    /// Every tag and the digest it points at.
    pub tags: Vec<(String, String)>,
    /// Every manifest those reach (index children included).
    pub manifests: HashMap<String, ManifestInfo>,
}

/// What to keep.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Deploys kept per app tag.
    pub keep_deploys: usize,
    /// Deploys younger than this many milliseconds are kept too.
    pub keep_for_ms: u64,
    /// Now, in milliseconds since the epoch.
    pub now_ms: u64,
    /// Base tags that are the base of the current inputs.
    pub current_base_tags: Vec<String>,
}

/// The decision on one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The repository's name.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// Whether it goes.
    pub delete: bool,
    /// Why.
    pub reason: String,
    /// Bytes of the blobs its image references.
    pub bytes: u64,
}

/// The whole plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// One decision per tag.
    pub decisions: Vec<Decision>,
    /// Manifests to delete, as (repository index, digest), parents before
    /// their children.
    #[serde(skip)]
    pub deletions: Vec<(usize, String)>,
    /// Bytes of blobs only deleted manifests reference, per repository,
    /// summed: what the registry's garbage collection can reclaim (at
    /// most: another repository of the registry may share a blob).
    pub freed_bytes: u64,
}

/// Whether `tag` is a base tag: `base-` and 16 hex digits, then nothing or
/// `-{namespace}`.
pub fn is_base_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("base-") else {
        return false;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(16));
    hex.len() == 16
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (suffix.is_empty() || suffix.len() > 1 && suffix.starts_with('-'))
}

/// A tag still to be decided on, or decided.
struct Entry {
    repo: usize,
    tag: String,
    digest: String,
    candidate: bool,
    reason: String,
}

/// Every manifest reachable from `roots`: index children, and the bases
/// their configs name (in `base_repo`). Maps each to the tag it was
/// reached from.
fn reachable(
    repos: &[Repo],
    base_repo: usize,
    roots: &[(usize, String, String)],
) -> HashMap<(usize, String), String> {
    let mut seen: HashMap<(usize, String), String> = HashMap::new();
    let mut pending: Vec<(usize, String, String)> = roots.to_vec();
    while let Some((repo, digest, via)) = pending.pop() {
        if seen.contains_key(&(repo, digest.clone())) {
            continue;
        }
        seen.insert((repo, digest.clone()), via.clone());
        let Some(info) = repos[repo].manifests.get(&digest) else {
            continue;
        };
        for child in &info.children {
            pending.push((repo, child.clone(), via.clone()));
        }
        if let Some(base) = &info.base {
            pending.push((base_repo, base.clone(), via.clone()));
        }
    }
    seen
}

/// The blobs (with sizes) of manifest `digest` and its children.
fn blobs_of(repo: &Repo, digest: &str, into: &mut HashMap<String, u64>) {
    let Some(info) = repo.manifests.get(digest) else {
        return;
    };
    into.insert(digest.to_owned(), info.size);
    for (blob, size) in &info.blobs {
        into.insert(blob.clone(), *size);
    }
    for child in &info.children {
        blobs_of(repo, child, into);
    }
}

/// Decides.
pub fn plan(repos: &[Repo], base_repo: usize, app_repo: usize, policy: &Policy) -> Plan {
    let mut entries: Vec<Entry> = Vec::new();
    let mut deploys: HashMap<(usize, String), Vec<(DeployTag, String)>> = HashMap::new();
    for (index, repo) in repos.iter().enumerate() {
        for (tag, digest) in &repo.tags {
            let deploy = (index == app_repo).then(|| DeployTag::parse(tag)).flatten();
            if let Some(deploy) = deploy {
                deploys
                    .entry((index, deploy.app_tag.clone()))
                    .or_default()
                    .push((deploy, digest.clone()));
                continue;
            }
            let (candidate, reason) = if index == base_repo && is_base_tag(tag) {
                if policy.current_base_tags.contains(tag) {
                    (false, "the base of the current inputs".to_owned())
                } else {
                    (true, "a base no kept image uses".to_owned())
                }
            } else {
                (false, "not a deploy or base tag".to_owned())
            };
            entries.push(Entry {
                repo: index,
                tag: tag.clone(),
                digest: digest.clone(),
                candidate,
                reason,
            });
        }
    }
    let days = policy.keep_for_ms as f64 / 86_400_000.0;
    for ((repo, app_tag), mut list) in deploys {
        list.sort_by(|a, b| b.0.cmp(&a.0));
        for (rank, (deploy, digest)) in list.into_iter().enumerate() {
            let age = policy.now_ms.saturating_sub(deploy.at_ms);
            let (candidate, reason) = if rank < policy.keep_deploys {
                (
                    false,
                    format!(
                        "one of the last {} deploys of {app_tag}",
                        policy.keep_deploys
                    ),
                )
            } else if age < policy.keep_for_ms {
                (false, format!("a deploy younger than {days} days"))
            } else if policy.keep_for_ms == 0 {
                (
                    true,
                    format!(
                        "older than the last {} deploys of {app_tag}",
                        policy.keep_deploys
                    ),
                )
            } else {
                (
                    true,
                    format!(
                        "older than the last {} deploys of {app_tag} and than {days} days",
                        policy.keep_deploys
                    ),
                )
            };
            entries.push(Entry {
                repo,
                tag: deploy.tag,
                digest,
                candidate,
                reason,
            });
        }
    }

    // Keep what kept tags reach, until nothing more is reached.
    loop {
        let roots: Vec<(usize, String, String)> = entries
            .iter()
            .filter(|e| !e.candidate)
            .map(|e| (e.repo, e.digest.clone(), e.tag.clone()))
            .collect();
        let reached = reachable(repos, base_repo, &roots);
        let mut changed = false;
        for entry in entries.iter_mut().filter(|e| e.candidate) {
            let own = reached.get(&(entry.repo, entry.digest.clone()));
            let children = repos[entry.repo]
                .manifests
                .get(&entry.digest)
                .map(|info| info.children.clone())
                .unwrap_or_default();
            // An app's label names the platform's image of a
            // multi-platform base, a child of the index the base tag holds.
            let via_child = children
                .iter()
                .filter(|_| is_base_tag(&entry.tag))
                .find_map(|child| reached.get(&(entry.repo, child.clone())));
            if let Some(via) = own.or(via_child) {
                entry.candidate = false;
                entry.reason = if is_base_tag(&entry.tag) {
                    format!("the base of kept image {via}")
                } else {
                    format!("the same image as kept tag {via}")
                };
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    let roots: Vec<(usize, String, String)> = entries
        .iter()
        .filter(|e| !e.candidate)
        .map(|e| (e.repo, e.digest.clone(), e.tag.clone()))
        .collect();
    let kept = reachable(repos, base_repo, &roots);
    let mut deletions: Vec<(usize, String)> = Vec::new();
    let mut deleted: HashSet<(usize, String)> = HashSet::new();
    let mut candidates: Vec<&Entry> = entries.iter().filter(|e| e.candidate).collect();
    candidates.sort_by(|a, b| (a.repo, &a.digest).cmp(&(b.repo, &b.digest)));
    for entry in candidates {
        let mut stack = vec![entry.digest.clone()];
        while let Some(digest) = stack.pop() {
            let key = (entry.repo, digest.clone());
            if kept.contains_key(&key) || !deleted.insert(key) {
                continue;
            }
            deletions.push((entry.repo, digest.clone()));
            if let Some(info) = repos[entry.repo].manifests.get(&digest) {
                stack.extend(info.children.iter().rev().cloned());
            }
        }
    }

    let mut freed_bytes = 0;
    for (index, repo) in repos.iter().enumerate() {
        let mut kept_blobs = HashMap::new();
        for (repo_index, digest) in kept.keys() {
            if *repo_index == index {
                blobs_of(repo, digest, &mut kept_blobs);
            }
        }
        let mut gone = HashMap::new();
        for (repo_index, digest) in &deletions {
            if *repo_index == index {
                blobs_of(repo, digest, &mut gone);
            }
        }
        freed_bytes += gone
            .iter()
            .filter(|(blob, _)| !kept_blobs.contains_key(*blob))
            .map(|(_, size)| size)
            .sum::<u64>();
    }

    let mut decisions: Vec<Decision> = entries
        .into_iter()
        .map(|entry| {
            let mut blobs = HashMap::new();
            blobs_of(&repos[entry.repo], &entry.digest, &mut blobs);
            Decision {
                repository: repos[entry.repo].name.clone(),
                tag: entry.tag,
                digest: entry.digest,
                delete: entry.candidate,
                reason: entry.reason,
                bytes: blobs.values().sum(),
            }
        })
        .collect();
    decisions
        .sort_by(|a, b| (&a.repository, a.delete, &a.tag).cmp(&(&b.repository, b.delete, &b.tag)));
    Plan {
        decisions,
        deletions,
        freed_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const DAY: u64 = 86_400_000;
    const NOW: u64 = 1_796_045_451_000;

    fn digest(name: &str) -> String {
        format!("sha256:{name:0>64}")
    }

    fn image(base: Option<&str>, layer: &str) -> ManifestInfo {
        ManifestInfo {
            blobs: vec![
                (digest(&format!("c{layer}")), 10),
                (digest(&format!("l{layer}")), 1000),
            ],
            base: base.map(digest),
            size: 1,
            ..ManifestInfo::default()
        }
    }

    fn deploy(tag: &str, days_ago: u64) -> String {
        DeployTag::new(
            tag,
            UNIX_EPOCH + Duration::from_millis(NOW - days_ago * DAY),
        )
        .unwrap()
        .tag
    }

    fn policy(current: &[&str]) -> Policy {
        Policy {
            keep_deploys: 2,
            keep_for_ms: 7 * DAY,
            now_ms: NOW,
            current_base_tags: current.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn decision<'a>(plan: &'a Plan, tag: &str) -> &'a Decision {
        plan.decisions
            .iter()
            .find(|d| d.tag == tag)
            .unwrap_or_else(|| panic!("no decision on {tag}"))
    }

    #[test]
    fn the_last_deploys_and_the_bases_they_use_are_kept_and_the_rest_goes() {
        let mut base = Repo {
            name: "r/base".into(),
            ..Repo::default()
        };
        for (tag, name) in [
            ("base-000000000000000a", "ba"),
            ("base-000000000000000b", "bb"),
            ("base-000000000000000c", "bc"),
            ("base-000000000000000d", "bd"),
            ("latest", "bd"),
        ] {
            base.tags.push((tag.into(), digest(name)));
            base.manifests.insert(digest(name), image(None, name));
        }
        let mut app = Repo {
            name: "r/web".into(),
            ..Repo::default()
        };
        // Deploys of prod, newest first: a1 (0 d), a2 (10 d), a3 (20 d), a4 (30 d).
        for (tag, name, base_name) in [
            (deploy("prod", 0), "a1", "bb"),
            (deploy("prod", 10), "a2", "ba"),
            (deploy("prod", 20), "a3", "bc"),
            (deploy("prod", 30), "a4", "bc"),
            ("prod".to_owned(), "a1", "bb"),
        ] {
            app.tags.push((tag, digest(name)));
            app.manifests
                .insert(digest(name), image(Some(base_name), name));
        }
        let repos = vec![base, app];
        let plan = plan(&repos, 0, 1, &policy(&["base-000000000000000c"]));
        let deleted: Vec<&str> = plan
            .decisions
            .iter()
            .filter(|d| d.delete)
            .map(|d| d.tag.as_str())
            .collect();
        let mut expected = [deploy("prod", 20), deploy("prod", 30)];
        expected.sort();
        assert_eq!(
            deleted,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(
            decision(&plan, "base-000000000000000a")
                .reason
                .contains("kept image")
        );
        assert!(
            decision(&plan, "base-000000000000000b")
                .reason
                .contains("kept image")
        );
        assert_eq!(
            decision(&plan, "base-000000000000000c").reason,
            "the base of the current inputs"
        );
        // d is what `latest` points at: kept as the same image.
        assert!(!decision(&plan, "base-000000000000000d").delete);
        assert!(!decision(&plan, "prod").delete);
        assert_eq!(plan.deletions, vec![(1, digest("a3")), (1, digest("a4"))]);
        // a3 and a4's own config and layer; their base c stays.
        assert_eq!(plan.freed_bytes, 2 * (1 + 10 + 1000));
    }

    #[test]
    fn young_deploys_stay_and_a_shared_manifest_is_never_deleted() {
        let mut app = Repo {
            name: "r/web".into(),
            ..Repo::default()
        };
        for (tag, name) in [
            (deploy("prod", 0), "a1"),
            (deploy("prod", 1), "a2"),
            (deploy("prod", 2), "a3"),
            (deploy("prod", 40), "a4"),
            (deploy("prod", 50), "a5"),
            ("v1".to_owned(), "a5"),
        ] {
            app.tags.push((tag, digest(name)));
            app.manifests.insert(digest(name), image(None, name));
        }
        let repos = vec![app];
        let plan = plan(&repos, 0, 0, &policy(&[]));
        assert!(
            decision(&plan, &deploy("prod", 2))
                .reason
                .contains("younger than 7 days")
        );
        assert!(decision(&plan, &deploy("prod", 40)).delete);
        let shared = decision(&plan, &deploy("prod", 50));
        assert!(!shared.delete, "a manifest tagged v1 would have gone");
        assert_eq!(shared.reason, "the same image as kept tag v1");
        assert_eq!(plan.deletions, vec![(0, digest("a4"))]);
    }

    #[test]
    fn an_index_takes_its_children_unless_a_kept_index_shares_them() {
        let mut app = Repo {
            name: "r/web".into(),
            ..Repo::default()
        };
        let index = |children: &[&str]| ManifestInfo {
            children: children.iter().map(|c| digest(c)).collect(),
            size: 1,
            ..ManifestInfo::default()
        };
        app.tags.push((deploy("prod", 0), digest("i1")));
        app.tags.push((deploy("prod", 1), digest("i2")));
        app.tags.push((deploy("prod", 30), digest("i3")));
        app.manifests.insert(digest("i1"), index(&["amd1", "arm1"]));
        app.manifests.insert(digest("i2"), index(&["amd1", "arm1"]));
        app.manifests.insert(digest("i3"), index(&["amd3", "arm1"]));
        for child in ["amd1", "arm1", "amd3"] {
            app.manifests.insert(digest(child), image(None, child));
        }
        let repos = vec![app];
        let mut policy = policy(&[]);
        policy.keep_for_ms = 0;
        let plan = plan(&repos, 0, 0, &policy);
        assert!(decision(&plan, &deploy("prod", 30)).delete);
        // i3 and its own child go; arm1, which kept indexes hold, stays.
        assert_eq!(plan.deletions, vec![(0, digest("i3")), (0, digest("amd3"))]);
    }

    #[test]
    fn base_tags_are_told_from_other_tags() {
        assert!(is_base_tag("base-0123456789abcdef"));
        assert!(is_base_tag("base-0123456789abcdef-pr-42"));
        for tag in [
            "base-0123",
            "base-0123456789abcdeg",
            "base-0123456789abcdef-",
            "latest",
            "base",
        ] {
            assert!(!is_base_tag(tag), "{tag}");
        }
    }
}
