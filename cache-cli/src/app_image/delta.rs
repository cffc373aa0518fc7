//! App layers by change (`[app] layers = "changes"`, planned in
//! `stack.rs`): what each entry of an app's tree is ([`listing`]), what
//! changed between the tree of the last deploy and this one ([`diff`]),
//! when a stack of delta layers is rewritten ([`Compaction::step`]), and
//! what a deploy's stack is ([`AppStack`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pack::exclude::Excludes;
use crate::pack::layer::sorted_entries;
use crate::pack::tree::StatCache;

/// What one entry of the tree is, as the layer holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A folder.
    Dir,
    /// A file: executable or not, its BLAKE3 (hex) and size.
    File {
        /// 0755 rather than 0644.
        executable: bool,
        /// BLAKE3 of its bytes, hex.
        blake3: String,
        /// Its size.
        size: u64,
    },
    /// A symbolic link and its target.
    Link(String),
}

impl Entry {
    fn kind(&self) -> u8 {
        match self {
            Self::Dir => 0,
            Self::File { .. } => 1,
            Self::Link(_) => 2,
        }
    }

    /// The bytes a file holds (0 for the rest).
    pub fn size(&self) -> u64 {
        match self {
            Self::File { size, .. } => *size,
            _ => 0,
        }
    }
}

/// Every entry of a tree by name (`/`-separated, relative to the context).
pub type Listing = BTreeMap<String, Entry>;

/// The listing of `context` without what `excludes` leaves out; `None`
/// when a name is not UTF-8 (such a tree is always packed whole). With the
/// context's stat cache, a file whose stamp it holds is not read again.
pub fn listing(
    context: &Path,
    excludes: &Excludes,
    mut cache: Option<&mut StatCache>,
) -> std::io::Result<Option<Listing>> {
    let mut out = Listing::new();
    for entry in sorted_entries(context, Some(excludes))? {
        let Ok(name) = String::from_utf8(entry.name.clone()) else {
            return Ok(None);
        };
        let kind = entry.meta.file_type();
        let value = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&entry.path)?;
            match target.to_str() {
                Some(target) => Entry::Link(target.to_owned()),
                None => return Ok(None),
            }
        } else if kind.is_file() {
            let hash = match cache.as_deref_mut() {
                Some(cache) => cache.content_hash(&entry.name, &entry.path, &entry.meta)?,
                None => {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update_reader(std::fs::File::open(&entry.path)?)?;
                    *hasher.finalize().as_bytes()
                }
            };
            Entry::File {
                executable: entry.meta.permissions().mode() & 0o111 != 0,
                blake3: blake3::Hash::from_bytes(hash).to_hex().to_string(),
                size: entry.meta.len(),
            }
        } else {
            continue; // sockets and devices are never packed
        };
        out.insert(name, value);
    }
    Ok(Some(out))
}

/// What a delta layer holds to turn the tree `old` into `new`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// Entries added or changed, with every folder above them.
    pub entries: BTreeSet<String>,
    /// Entries deleted: only the top-most of a deleted folder.
    pub whiteouts: Vec<String>,
    /// The bytes of the files added or changed.
    pub bytes: u64,
    /// How many files were added or changed.
    pub files: usize,
}

impl Delta {
    /// Whether the trees are the same.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.whiteouts.is_empty()
    }
}

/// The delta from `old` to `new`; `None` when an entry changed kind (a
/// file became a folder): that tree is packed whole.
pub fn diff(old: &Listing, new: &Listing) -> Option<Delta> {
    let mut delta = Delta::default();
    for (name, entry) in new {
        match old.get(name) {
            Some(before) if before == entry => continue,
            Some(before) if before.kind() != entry.kind() => return None,
            _ => {}
        }
        if matches!(entry, Entry::File { .. }) {
            delta.files += 1;
            delta.bytes += entry.size();
        }
        let mut parent = name.as_str();
        while let Some((folder, _)) = parent.rsplit_once('/') {
            delta.entries.insert(folder.to_owned());
            parent = folder;
        }
        delta.entries.insert(name.clone());
    }
    for name in old.keys() {
        if new.contains_key(name) {
            continue;
        }
        let under_deleted = delta
            .whiteouts
            .iter()
            .any(|folder| name.starts_with(&format!("{folder}/")));
        if !under_deleted {
            delta.whiteouts.push(name.clone());
        }
    }
    Some(delta)
}

/// When a stack of delta layers is rewritten.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// At most this many delta layers on top of the full one.
    pub max_deltas: usize,
    /// At most this share of the app's bytes in delta layers.
    pub max_share: f64,
}

impl Default for Compaction {
    fn default() -> Self {
        Self {
            max_deltas: 8,
            max_share: 0.25,
        }
    }
}

/// What a deploy's app layers are, given the last deploy's stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The same tree: the last deploy's layers.
    Unchanged,
    /// One more delta layer on the last deploy's.
    Delta(Delta),
    /// The deltas rewritten into one, of everything that changed since the
    /// full layer, which stays: what never changes is never pushed again.
    Squash(Delta),
    /// The whole app as one layer.
    Whole,
}

impl Compaction {
    /// The most delta layers a user may keep: registries and runtimes
    /// handle a hundred layers, and each one costs every pull a request.
    pub const MOST_DELTAS: usize = 64;

    /// What this deploy pushes on `last` (none known: the whole app) for
    /// the tree `now` of `app_bytes`: a delta while the stack stays within
    /// both bounds; past either, the deltas squashed into one while that
    /// one stays within the share; else the whole app.
    pub fn step(&self, last: Option<&AppStack>, now: &Listing, app_bytes: u64) -> Step {
        let Some(last) = last else {
            return Step::Whole;
        };
        let Some(change) = diff(&last.listing, now) else {
            return Step::Whole;
        };
        if change.is_empty() {
            return Step::Unchanged;
        }
        let share = |bytes: u64| bytes as f64 <= self.max_share * app_bytes.max(1) as f64;
        if last.deltas() < self.max_deltas && share(last.delta_bytes() + change.bytes) {
            return Step::Delta(change);
        }
        match diff(&last.full, now) {
            Some(squashed) if self.max_deltas > 0 && share(squashed.bytes) => {
                Step::Squash(squashed)
            }
            _ => Step::Whole,
        }
    }
}

/// One layer of an app's stack, as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackLayer {
    /// The blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The blob's size.
    pub size: u64,
    /// The bytes of the files it holds.
    pub file_bytes: u64,
}

/// The last deploy of an app on a base: its layers, bottom first (one full
/// layer, then deltas), the tree of the full layer and the tree they all
/// make.
#[derive(Debug, Clone)]
pub struct AppStack {
    /// The app's layers, the full one first.
    pub layers: Vec<StackLayer>,
    /// The tree the full layer holds.
    pub full: Listing,
    /// The tree the layers make.
    pub listing: Listing,
}

impl AppStack {
    /// How many delta layers are on the full one.
    pub fn deltas(&self) -> usize {
        self.layers.len().saturating_sub(1)
    }

    /// The bytes of the files in its delta layers.
    pub fn delta_bytes(&self) -> u64 {
        self.layers
            .iter()
            .skip(1)
            .map(|layer| layer.file_bytes)
            .sum()
    }
}

/// Entries changed (`Some`) or deleted (`None`) from one tree to another.
pub type Changes = BTreeMap<String, Option<Entry>>;

/// What turns the tree `from` into `to`, entry by entry.
pub fn changes(from: &Listing, to: &Listing) -> Changes {
    let mut out: Changes = to
        .iter()
        .filter(|(name, entry)| from.get(*name) != Some(*entry))
        .map(|(name, entry)| (name.clone(), Some(entry.clone())))
        .collect();
    for name in from.keys().filter(|name| !to.contains_key(*name)) {
        out.insert(name.clone(), None);
    }
    out
}

/// The tree `from` with `changes` made.
pub fn apply(from: &Listing, changes: &Changes) -> Listing {
    let mut out = from.clone();
    for (name, entry) in changes {
        match entry {
            Some(entry) => out.insert(name.clone(), entry.clone()),
            None => out.remove(name),
        };
    }
    out
}

/// Whether every name stays inside the app folder (a record comes from the
/// cache, which is not trusted to name other paths).
pub fn names_are_safe<'a>(mut names: impl Iterator<Item = &'a String>) -> bool {
    names.all(|name| {
        !name.is_empty()
            && name
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
    })
}

/// The app's bytes in `listing`.
pub fn app_bytes(listing: &Listing) -> u64 {
    listing.values().map(Entry::size).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> Entry {
        Entry::File {
            executable: false,
            blake3: blake3::hash(content.as_bytes()).to_hex().to_string(),
            size: content.len() as u64,
        }
    }

    fn tree(entries: &[(&str, Entry)]) -> Listing {
        entries
            .iter()
            .map(|(name, entry)| ((*name).to_owned(), entry.clone()))
            .collect()
    }

    #[test]
    fn a_change_an_addition_and_deletions_make_the_delta() {
        let old = tree(&[
            ("web", Entry::Dir),
            ("web/views.py", file("a")),
            ("web/static", Entry::Dir),
            ("web/static/x.css", file("x")),
            ("web/static/y.css", file("y")),
            ("run.sh", file("#!")),
        ]);
        let mut new = tree(&[
            ("web", Entry::Dir),
            ("web/views.py", file("b")),
            ("web/new.py", file("new")),
            ("run.sh", file("#!")),
        ]);
        let delta = diff(&old, &new).unwrap();
        assert_eq!(
            delta.entries.iter().collect::<Vec<_>>(),
            ["web", "web/new.py", "web/views.py"]
        );
        // The deleted folder's whiteout covers what was in it.
        assert_eq!(delta.whiteouts, ["web/static"]);
        assert_eq!((delta.files, delta.bytes), (2, 4));
        // A mode change is a change; the same tree is no delta.
        new.insert(
            "run.sh".into(),
            Entry::File {
                executable: true,
                blake3: blake3::hash(b"#!").to_hex().to_string(),
                size: 2,
            },
        );
        assert!(diff(&old, &new).unwrap().entries.contains("run.sh"));
        assert!(diff(&new, &new).unwrap().is_empty());
        // A file that becomes a folder: packed whole.
        let folder = tree(&[("run.sh", Entry::Dir)]);
        assert_eq!(diff(&old, &folder), None);
    }

    #[test]
    fn a_record_naming_a_path_outside_the_app_is_not_used() {
        let safe = |name: &str| names_are_safe([name.to_owned()].iter());
        assert!(safe("web/static"));
        for bad in ["../etc", "web/../../x", "/abs", "", "a//b"] {
            assert!(!safe(bad), "{bad}");
        }
    }

    fn stack(full: &Listing, listing: &Listing, delta_bytes: &[u64]) -> AppStack {
        let layer = |file_bytes| StackLayer {
            digest: String::new(),
            diff_id: String::new(),
            size: 0,
            file_bytes,
        };
        AppStack {
            layers: std::iter::once(layer(0))
                .chain(delta_bytes.iter().map(|bytes| layer(*bytes)))
                .collect(),
            full: full.clone(),
            listing: listing.clone(),
        }
    }

    #[test]
    fn past_the_count_the_deltas_are_squashed_and_past_the_share_the_app_is_one_layer() {
        let rule = Compaction {
            max_deltas: 2,
            max_share: 0.25,
        };
        let full = tree(&[("big.bin", file(&"b".repeat(900))), ("v.py", file("1"))]);
        let now = tree(&[("big.bin", file(&"b".repeat(900))), ("v.py", file("22"))]);
        let last = |deltas: &[u64]| stack(&full, &full, deltas);
        assert_eq!(rule.step(None, &now, 902), Step::Whole);
        assert_eq!(rule.step(Some(&last(&[])), &full, 901), Step::Unchanged);
        assert!(matches!(
            rule.step(Some(&last(&[1])), &now, 902),
            Step::Delta(_)
        ));
        // A third delta: the two and this one become one, of v.py alone.
        match rule.step(Some(&last(&[1, 1])), &now, 902) {
            Step::Squash(squashed) => assert_eq!((squashed.files, squashed.bytes), (1, 2)),
            other => panic!("{other:?}"),
        }
        // Deltas holding more than a quarter of the app: squashed, as what
        // changed since the full layer is within it.
        assert!(matches!(
            rule.step(Some(&last(&[250])), &now, 902),
            Step::Squash(_)
        ));
        // What changed since the full layer is more than a quarter.
        let rewritten = tree(&[("big.bin", file(&"c".repeat(900))), ("v.py", file("1"))]);
        assert_eq!(
            rule.step(Some(&last(&[1, 1])), &rewritten, 901),
            Step::Whole
        );
        // No deltas allowed: the app is one layer on every change.
        let none = Compaction {
            max_deltas: 0,
            ..rule
        };
        assert_eq!(none.step(Some(&last(&[])), &now, 902), Step::Whole);
    }

    #[test]
    fn changes_applied_to_the_full_tree_give_the_tree() {
        let full = tree(&[("a", file("1")), ("d", Entry::Dir), ("d/x", file("x"))]);
        let now = tree(&[("a", file("2")), ("b", file("new"))]);
        let changes = changes(&full, &now);
        assert_eq!(changes.len(), 4);
        assert_eq!(apply(&full, &changes), now);
    }

    #[test]
    fn the_listing_is_what_the_layer_would_hold() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("web")).unwrap();
        std::fs::write(root.path().join("web/a.py"), "a").unwrap();
        std::fs::write(root.path().join("debug.log"), "noise").unwrap();
        std::os::unix::fs::symlink("web/a.py", root.path().join("link")).unwrap();
        let excludes = Excludes::new(["*.log"]).unwrap();
        let listed = listing(root.path(), &excludes, None).unwrap().unwrap();
        // The stat cache gives the same listing.
        let caches = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let mut cache = StatCache::load(caches.path(), root.path());
            let cached = listing(root.path(), &excludes, Some(&mut cache));
            assert_eq!(cached.unwrap().unwrap(), listed);
            cache.save().unwrap();
        }
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            ["link", "web", "web/a.py"]
        );
        assert_eq!(listed["link"], Entry::Link("web/a.py".into()));
        assert_eq!(listed["web/a.py"], file("a"));
    }
}
