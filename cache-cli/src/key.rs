//! The base key: BLAKE3 over a versioned, canonical list of the inputs that
//! decide the base image.
//!
//! Every input is a triple (kind, name, BLAKE3 of its content):
//!
//! - `manifest`, the path relative to the project root with `/` separators,
//!   the hash of the file, for every file a manifest glob matches;
//! - `recipe`, the base Dockerfile (`dockerfile:<path>`), or the native
//!   builder's `from` and `install`;
//! - `arg`, each build argument by name, its value hashed;
//! - `platform`, the target platform;
//! - `upstream`, each image the base is built on (see [`crate::upstream`])
//!   by reference, the digest it resolves to for the platform hashed.
//!
//! A Dockerfile that a manifest pattern also matches counts once, as the
//! recipe.
//!
//! The key is BLAKE3 of `cachectl-base-key/v2\n` followed by one line
//! `kind\0name\0hex\n` per input, sorted by kind then name. Names never hold
//! a NUL (paths and argument names cannot), so the encoding is unambiguous;
//! the same inputs give the same key on any machine and checkout, and
//! changing any of them gives a new one. Bump the version line to change the
//! encoding. (v1 had no `upstream` inputs and hashed a Dockerfile listed
//! among the manifests twice.)

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cache_proto::Key;
use serde::{Deserialize, Serialize};

use crate::builder::step::{Capture, InstallIn};
use crate::packages::stack::DEFAULT_MAX_LAYERS;
use crate::packages::step::InstallStep;

const VERSION_LINE: &str = "cachectl-base-key/v2\n";

/// What kind of input an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// A dependency manifest file.
    Manifest,
    /// The base recipe.
    Recipe,
    /// A build argument.
    Arg,
    /// The target platform.
    Platform,
    /// An image the base is built on, by the digest it resolves to.
    Upstream,
}

impl InputKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Recipe => "recipe",
            Self::Arg => "arg",
            Self::Platform => "platform",
            Self::Upstream => "upstream",
        }
    }
}

/// One input of the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Input {
    /// Its kind.
    pub kind: InputKind,
    /// Its name: a path, a recipe part, an argument name, the platform.
    pub name: String,
    /// BLAKE3 of its content, hex.
    pub hash: String,
    /// The content itself where it is short and says something to a reader
    /// (an upstream image's digest), so that a change can show old and new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Input {
    fn new(kind: InputKind, name: impl Into<String>, content: &[u8]) -> Self {
        Self {
            kind,
            name: name.into(),
            hash: blake3::hash(content).to_hex().to_string(),
            value: None,
        }
    }

    /// The input of upstream image `name` resolving to `digest`.
    pub fn upstream(name: &str, digest: &str) -> Self {
        Self {
            value: Some(digest.to_owned()),
            ..Self::new(InputKind::Upstream, name, digest.as_bytes())
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// How the base is built, as far as the key is concerned.
#[derive(Debug, Clone)]
pub enum Recipe {
    /// A Dockerfile at this path (relative to the project root).
    Dockerfile(PathBuf),
    /// The native builder.
    Native {
        /// Starting image, if any.
        from: Option<String>,
        /// Install command.
        install: String,
        /// Where it runs: inside the `from` image or on the host.
        install_in: InstallIn,
        /// What becomes the layer.
        capture: Capture,
        /// The step's pip install, when it becomes package layers.
        package_layers: Option<InstallStep>,
        /// With package layers: at most this many layers in the image.
        max_layers: usize,
    },
}

/// Everything the key is computed from.
#[derive(Debug, Clone)]
pub struct KeySpec<'a> {
    /// Project root; manifest globs and paths are relative to it.
    pub root: &'a Path,
    /// Manifest glob patterns.
    pub manifests: &'a [String],
    /// The recipe.
    pub recipe: &'a Recipe,
    /// Build arguments.
    pub args: &'a BTreeMap<String, String>,
    /// Target platform.
    pub platform: &'a str,
    /// The upstream images' inputs: each name and its digest (empty when
    /// not tracked).
    pub upstreams: &'a [Input],
}

/// Why the key could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A pattern matched no file.
    #[error("manifest pattern {0:?} matches no file")]
    NoMatch(String),
    /// A pattern is not a valid glob.
    #[error("manifest pattern {pattern:?} is invalid: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The computed key and the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseKey {
    /// The key.
    pub key: Key,
    /// Its inputs, sorted.
    pub inputs: Vec<Input>,
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn relative_name(root: &Path, path: &Path) -> String {
    // `./web` and the `web/x` glob returns for it: compared without the
    // `.` components.
    let clean = |path: &Path| -> PathBuf {
        path.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    let (root, path) = (clean(root), clean(path));
    let relative = path.strip_prefix(&root).unwrap_or(&path);
    relative
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Lists the files the manifest patterns match, relative to `root`, sorted.
pub fn manifest_files(
    root: &Path,
    patterns: &[String],
) -> Result<Vec<(String, PathBuf)>, KeyError> {
    let mut files = BTreeMap::new();
    for pattern in patterns {
        // Outside the root a match has no root-relative name, so the key
        // would depend on where the checkout lives (and a configuration
        // could make cachectl read any file of the host).
        let escapes = Path::new(pattern).components().any(|part| {
            matches!(
                part,
                std::path::Component::ParentDir
                    | std::path::Component::RootDir
                    | std::path::Component::Prefix(_)
            )
        });
        if escapes {
            return Err(KeyError::BadPattern {
                pattern: pattern.clone(),
                message: "it must stay inside the project root (no absolute path, no `..`)".into(),
            });
        }
        let full = root.join(pattern);
        let matches =
            glob::glob(&full.to_string_lossy()).map_err(|error| KeyError::BadPattern {
                pattern: pattern.clone(),
                message: error.to_string(),
            })?;
        let mut matched = false;
        for path in matches.flatten() {
            if path.is_file() {
                matched = true;
                files.insert(relative_name(root, &path), path);
            }
        }
        if !matched {
            return Err(KeyError::NoMatch(pattern.clone()));
        }
    }
    Ok(files.into_iter().collect())
}

/// Computes the key.
pub fn compute(spec: &KeySpec<'_>) -> Result<BaseKey, KeyError> {
    let mut inputs = Vec::new();
    let recipe_file = match spec.recipe {
        Recipe::Dockerfile(path) => Some(relative_name(Path::new(""), path)),
        Recipe::Native { .. } => None,
    };
    for (name, path) in manifest_files(spec.root, spec.manifests)? {
        if recipe_file.as_ref() == Some(&name) {
            continue;
        }
        inputs.push(Input::new(InputKind::Manifest, name, &read(&path)?));
    }
    match spec.recipe {
        Recipe::Dockerfile(path) => {
            let bytes = read(&spec.root.join(path))?;
            let name = format!("dockerfile:{}", relative_name(Path::new(""), path));
            inputs.push(Input::new(InputKind::Recipe, name, &bytes));
        }
        Recipe::Native {
            from,
            install,
            install_in,
            capture,
            package_layers,
            max_layers,
        } => {
            inputs.push(Input::new(
                InputKind::Recipe,
                "from",
                from.as_deref().unwrap_or("scratch").as_bytes(),
            ));
            inputs.push(Input::new(InputKind::Recipe, "install", install.as_bytes()));
            // Without a `from` image the step can only run on the host.
            if from.is_some() {
                let name = install_in.name();
                inputs.push(Input::new(InputKind::Recipe, "install-in", name.as_bytes()));
            }
            // Only the non-default capture is an input: keys of `{out}`
            // layers stay as they were.
            if *capture == Capture::Changes {
                inputs.push(Input::new(InputKind::Recipe, "capture", b"changes"));
            }
            // A stack of package layers is another image than one layer.
            if package_layers.is_some() {
                inputs.push(Input::new(InputKind::Recipe, "package-layers", b"on"));
                // Only another budget than the default is an input.
                if *max_layers != DEFAULT_MAX_LAYERS {
                    let text = max_layers.to_string();
                    inputs.push(Input::new(InputKind::Recipe, "max-layers", text.as_bytes()));
                }
            }
        }
    }
    for (name, value) in spec.args {
        inputs.push(Input::new(InputKind::Arg, name.clone(), value.as_bytes()));
    }
    inputs.push(Input::new(
        InputKind::Platform,
        spec.platform,
        spec.platform.as_bytes(),
    ));
    inputs.extend(spec.upstreams.iter().cloned());
    inputs.sort();
    Ok(BaseKey {
        key: key_of(&inputs),
        inputs,
    })
}

/// The key of a sorted input list.
pub fn key_of(inputs: &[Input]) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(VERSION_LINE.as_bytes());
    for input in inputs {
        hasher.update(input.kind.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(input.name.as_bytes());
        hasher.update(b"\0");
        hasher.update(input.hash.as_bytes());
        hasher.update(b"\n");
    }
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// How one input differs between two input lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// Only in the new list.
    Added {
        /// The input.
        input: String,
    },
    /// Only in the old list.
    Removed {
        /// The input.
        input: String,
    },
    /// In both, with different content.
    Changed {
        /// The input.
        input: String,
        /// Its old value, where the input shows one (an upstream's digest).
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Its new value.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { input } => write!(f, "added   {input}"),
            Self::Removed { input } => write!(f, "removed {input}"),
            Self::Changed {
                input,
                from: Some(from),
                to: Some(to),
            } => write!(f, "changed {input}  {from} -> {to}"),
            Self::Changed { input, .. } => write!(f, "changed {input}"),
        }
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &[Input], new: &[Input]) -> Vec<Change> {
    let index = |inputs: &[Input]| -> BTreeMap<(InputKind, String), Input> {
        inputs
            .iter()
            .map(|i| ((i.kind, i.name.clone()), i.clone()))
            .collect()
    };
    let (old, new) = (index(old), index(new));
    let mut changes = Vec::new();
    for ((kind, name), input) in &new {
        let label = format!("{} {name}", kind.as_str());
        match old.get(&(*kind, name.clone())) {
            None => changes.push(Change::Added { input: label }),
            Some(previous) if previous.hash != input.hash => changes.push(Change::Changed {
                input: label,
                from: previous.value.clone(),
                to: input.value.clone(),
            }),
            Some(_) => {}
        }
    }
    for (kind, name) in old.keys() {
        if !new.contains_key(&(*kind, name.clone())) {
            changes.push(Change::Removed {
                input: format!("{} {name}", kind.as_str()),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Resolved;

    #[test]
    fn manifest_names_are_relative_to_a_root_written_with_a_dot() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir(folder.path().join("web")).unwrap();
        std::fs::write(folder.path().join("web/package-lock.json"), "{}").unwrap();
        let root = folder.path().join(".").join("web");
        let files = manifest_files(&root, &["package-lock.json".to_owned()]).unwrap();
        assert_eq!(files[0].0, "package-lock.json");
    }

    fn project() -> tempfile::TempDir {
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir(folder.path().join("requirements")).unwrap();
        std::fs::write(folder.path().join("requirements/base.txt"), "flask==3.0\n").unwrap();
        std::fs::write(folder.path().join("requirements/dev.txt"), "pytest\n").unwrap();
        std::fs::write(folder.path().join("Dockerfile.base"), "FROM busybox\n").unwrap();
        folder
    }

    #[test]
    fn patterns_leaving_the_root_are_refused() {
        // Regression: `../../etc/passwd` was read and hashed under its
        // absolute path, a key that changed with the checkout's location.
        let folder = project();
        let inner = folder.path().join("requirements");
        for pattern in ["../Dockerfile.base", "/etc/passwd", "a/../../b"] {
            let error = manifest_files(&inner, &[pattern.to_owned()]).unwrap_err();
            assert!(
                matches!(error, KeyError::BadPattern { .. }),
                "{pattern}: {error}"
            );
        }
        assert_eq!(
            manifest_files(folder.path(), &["requirements/*.txt".to_owned()])
                .unwrap()
                .len(),
            2
        );
    }

    fn key(
        root: &Path,
        recipe: &Recipe,
        args: &BTreeMap<String, String>,
        platform: &str,
    ) -> BaseKey {
        let manifests = vec!["requirements/*.txt".to_owned()];
        compute(&KeySpec {
            root,
            manifests: &manifests,
            recipe,
            args,
            platform,
            upstreams: &[],
        })
        .unwrap()
    }

    /// The inputs of [`project`] with its Dockerfile as recipe.
    const PROJECT_INPUTS: [&str; 4] = [
        "manifest requirements/base.txt",
        "manifest requirements/dev.txt",
        "recipe dockerfile:Dockerfile.base",
        "platform linux/amd64",
    ];

    #[test]
    fn same_inputs_same_key_in_another_checkout() {
        let (a, b) = (project(), project());
        let recipe = Recipe::Dockerfile("Dockerfile.base".into());
        let args = BTreeMap::new();
        let first = key(a.path(), &recipe, &args, "linux/amd64");
        assert_eq!(first, key(b.path(), &recipe, &args, "linux/amd64"));
        let names: Vec<_> = first.inputs.iter().map(|i| i.to_string()).collect();
        assert_eq!(names, PROJECT_INPUTS);
    }

    #[test]
    fn every_input_changes_the_key_and_the_diff_names_it() {
        let folder = project();
        let root = folder.path();
        let recipe = Recipe::Native {
            from: None,
            install: "cp -r deps {out}".into(),
            install_in: InstallIn::Host,
            capture: Capture::Out,
            package_layers: None,
            max_layers: DEFAULT_MAX_LAYERS,
        };
        let args = BTreeMap::new();
        let original = key(root, &recipe, &args, "linux/amd64");

        std::fs::write(root.join("requirements/base.txt"), "flask==3.1\n").unwrap();
        let edited = key(root, &recipe, &args, "linux/amd64");
        assert_ne!(edited.key, original.key);
        assert_eq!(
            diff(&original.inputs, &edited.inputs),
            vec![Change::Changed {
                input: "manifest requirements/base.txt".into(),
                from: None,
                to: None,
            }]
        );
        std::fs::write(root.join("requirements/base.txt"), "flask==3.0\n").unwrap();
        assert_eq!(key(root, &recipe, &args, "linux/amd64"), original);

        let with_arg = BTreeMap::from([("PY".to_owned(), "3.12".to_owned())]);
        assert_ne!(
            key(root, &recipe, &with_arg, "linux/amd64").key,
            original.key
        );
        assert_ne!(key(root, &recipe, &args, "linux/arm64").key, original.key);
        let other_recipe = Recipe::Native {
            from: Some("busybox".into()),
            install: "cp -r deps {out}".into(),
            install_in: InstallIn::Host,
            capture: Capture::Out,
            package_layers: None,
            max_layers: DEFAULT_MAX_LAYERS,
        };
        assert_ne!(
            key(root, &other_recipe, &args, "linux/amd64").key,
            original.key
        );
    }

    #[test]
    fn a_pattern_matching_nothing_is_an_error_naming_it() {
        let folder = project();
        let manifests = vec!["package-lock.json".to_owned()];
        let error = compute(&KeySpec {
            root: folder.path(),
            manifests: &manifests,
            recipe: &Recipe::Dockerfile("Dockerfile.base".into()),
            args: &BTreeMap::new(),
            platform: "linux/amd64",
            upstreams: &[],
        })
        .unwrap_err();
        assert!(error.to_string().contains("package-lock.json"), "{error}");
    }

    #[test]
    fn a_dockerfile_among_the_manifests_counts_once_as_the_recipe() {
        // Regression: `manifests = ["requirements/*.txt", "Dockerfile.base"]`
        // (the README's own example) hashed the file as both.
        let folder = project();
        let manifests = vec![
            "requirements/*.txt".to_owned(),
            "./Dockerfile.base".to_owned(),
        ];
        let recipe = Recipe::Dockerfile("./Dockerfile.base".into());
        let base = compute(&KeySpec {
            root: folder.path(),
            manifests: &manifests,
            recipe: &recipe,
            args: &BTreeMap::new(),
            platform: "linux/amd64",
            upstreams: &[],
        })
        .unwrap();
        let names: Vec<_> = base.inputs.iter().map(|i| i.to_string()).collect();
        assert_eq!(names, PROJECT_INPUTS);
    }

    #[test]
    fn a_new_upstream_digest_changes_the_key_and_the_diff_shows_both_digests() {
        let folder = project();
        let recipe = Recipe::Dockerfile("Dockerfile.base".into());
        let manifests = vec!["requirements/*.txt".to_owned()];
        let with = |digest: &str| {
            let upstreams = [Resolved {
                name: "busybox".into(),
                digest: digest.into(),
                source: crate::upstream::Source::Registry,
            }];
            compute(&KeySpec {
                root: folder.path(),
                manifests: &manifests,
                recipe: &recipe,
                args: &BTreeMap::new(),
                platform: "linux/amd64",
                upstreams: &upstreams.iter().map(Resolved::input).collect::<Vec<_>>(),
            })
            .unwrap()
        };
        let (old, new) = (with("sha256:aaa"), with("sha256:bbb"));
        assert_ne!(old.key, new.key);
        assert_eq!(with("sha256:aaa"), old);
        let changes = diff(&old.inputs, &new.inputs);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].to_string(),
            "changed upstream busybox  sha256:aaa -> sha256:bbb"
        );
    }
}
