//! A resolved install plan: every package at its exact version and
//! artifact, in install order, for one interpreter (pip) or runtime
//! platform (npm); and what decides each package's layer (its key),
//! including whether the layer is tied to the `from` image.

use cache_proto::Key;

/// How an artifact is checked, as its lock or resolver names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactHash {
    /// A SHA-256, lowercase hex (pip's reports and `--hash`).
    Sha256(String),
    /// A Subresource Integrity string, `sha512-BASE64` (npm's locks).
    Integrity(String),
}

/// The artifact a package is installed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it was found (an index URL, `file://` of a local wheel, a
    /// registry tarball).
    pub url: String,
    /// Its hash, when the resolver reported one: a local folder or a VCS
    /// checkout has none.
    pub hash: Option<ArtifactHash>,
}

impl Artifact {
    /// The file name the URL ends in (`Django-5.1.4-py3-none-any.whl`).
    pub fn file_name(&self) -> &str {
        let path = self.url.split(['#', '?']).next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default()
    }

    /// The wheel's platform tags (`any`, `manylinux_2_17_x86_64`, ...),
    /// `None` when the artifact is not a wheel (an sdist, a folder).
    pub fn wheel_platforms(&self) -> Option<Vec<&str>> {
        let stem = self.file_name().strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        // name-version[-build]-python-abi-platform
        if parts.len() < 5 {
            return None;
        }
        parts.last().map(|platform| platform.split('.').collect())
    }
}

/// One package of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its normalised name (PEP 503: lowercase, runs of `-_.` as `-`).
    pub name: String,
    /// Its exact version.
    pub version: String,
    /// What it is installed from.
    pub artifact: Artifact,
    /// Whether the requirement named the artifact itself (a URL or path).
    pub direct: bool,
    /// Whether the project asked for it (not only another package): pip
    /// marks those `REQUESTED` in their metadata.
    pub requested: bool,
    /// Whether its layer depends on the `from` image (see [`Tie`]).
    pub tie: Tie,
    /// The packages (indexes into the plan) whose layers decide this
    /// one's too: an npm package's install script sees its dependencies.
    pub needs: Vec<usize>,
}

/// Why a package's layer depends on the `from` image, when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// A pure-Python wheel, or a manylinux/musllinux wheel (built against
    /// an old C library and carrying every other library it needs):
    /// installing it writes the same files on any image with the same
    /// interpreter.
    Interpreter,
    /// Built in the image (an sdist, a folder, a VCS checkout), or a wheel
    /// tagged for this machine only (`linux_x86_64`), which may link any
    /// library of the image: rebuilt when the image moves.
    Image,
}

impl Tie {
    /// The tie of a pip package installed from `artifact`.
    pub fn of_wheel(artifact: &Artifact) -> Self {
        match artifact.wheel_platforms() {
            Some(platforms)
                if platforms.iter().all(|platform| {
                    *platform == "any"
                        || platform.starts_with("manylinux")
                        || platform.starts_with("musllinux")
                }) =>
            {
                Tie::Interpreter
            }
            _ => Tie::Image,
        }
    }
}

impl Package {
    /// Whether the layer can be recorded and reused: the artifact is known
    /// by its hash. A folder or a checkout is installed on every build.
    pub fn reusable(&self) -> bool {
        self.artifact.hash.is_some()
    }
}

/// The interpreter a plan is for, as the resolver saw it inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// `cpython`, `pypy`.
    pub implementation: String,
    /// `3.11` (the minor version decides the ABI and the bytecode).
    pub version: String,
    /// `x86_64`, `aarch64`.
    pub machine: String,
    /// `linux`.
    pub platform: String,
}

/// A resolved plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every package, in install order.
    pub packages: Vec<Package>,
    /// For which interpreter.
    pub interpreter: Interpreter,
}

/// What else decides a package's layer besides the package.
#[derive(Debug, Clone, Copy)]
pub struct LayerInputs<'a> {
    /// The interpreter.
    pub interpreter: &'a Interpreter,
    /// Where packages go in the image (`opt/deps`).
    pub prefix: &'a str,
    /// The install options kept for one package.
    pub options: &'a [String],
    /// The `from` image's manifest digest.
    pub from_digest: &'a str,
}

/// The key of `package`'s layer: the package, its artifact, the
/// interpreter, the prefix and options, and the `from` image when the
/// package is tied to it.
pub fn layer_key(package: &Package, inputs: LayerInputs<'_>) -> Key {
    let mut hasher = blake3::Hasher::new();
    let mut field = |name: &str, value: &str| {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\0");
    };
    field("kind", "cachectl-package-layer/v1");
    field("name", &package.name);
    field("version", &package.version);
    field("file", package.artifact.file_name());
    match &package.artifact.hash {
        Some(ArtifactHash::Integrity(integrity)) => field("integrity", integrity),
        Some(ArtifactHash::Sha256(hex)) => field("sha256", hex),
        None => field("sha256", ""),
    }
    field("implementation", &inputs.interpreter.implementation);
    field("python", &inputs.interpreter.version);
    field("machine", &inputs.interpreter.machine);
    field("platform", &inputs.interpreter.platform);
    field("prefix", inputs.prefix);
    for option in inputs.options {
        field("option", option);
    }
    if package.tie == Tie::Image {
        field("from", inputs.from_digest);
    }
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// The key of a package's layer whose bytes also depend on the layers of
/// `needs` (their keys, in plan order): `own` with theirs.
pub fn with_needs(own: Key, needs: &[Key]) -> Key {
    if needs.is_empty() {
        return own;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-package-needs/v1\0");
    hasher.update(own.as_bytes());
    for key in needs {
        hasher.update(key.as_bytes());
    }
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// How plan `new` differs from `old` (both `name==version`): a version
/// change as `name old -> new`, an addition as `+ name version`, a removal
/// as `- name version`; in name order.
pub fn diff(old: &[String], new: &[String]) -> Vec<String> {
    let split = |plan: &[String]| -> std::collections::BTreeMap<String, String> {
        plan.iter()
            .filter_map(|entry| entry.split_once("=="))
            .map(|(name, version)| (name.to_owned(), version.to_owned()))
            .collect()
    };
    let (old, new) = (split(old), split(new));
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| match (old.get(name), new.get(name)) {
            (Some(before), Some(after)) if before != after => {
                Some(format!("{name} {before} -> {after}"))
            }
            (None, Some(after)) => Some(format!("+ {name} {after}")),
            (Some(before), None) => Some(format!("- {name} {before}")),
            _ => None,
        })
        .collect()
}

/// `name` normalised as PEP 503 says: lowercase, runs of `-`, `_` and `.`
/// as one `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(file: &str) -> Package {
        let artifact = Artifact {
            url: format!("https://files.example/{file}#sha256=00"),
            hash: Some(ArtifactHash::Sha256("00".repeat(32))),
        };
        Package {
            name: "p".into(),
            version: "1".into(),
            tie: Tie::of_wheel(&artifact),
            artifact,
            direct: false,
            requested: true,
            needs: Vec::new(),
        }
    }

    fn interpreter() -> Interpreter {
        Interpreter {
            implementation: "cpython".into(),
            version: "3.11".into(),
            machine: "x86_64".into(),
            platform: "linux".into(),
        }
    }

    #[test]
    fn plans_differ_by_bump_addition_and_removal() {
        let plan = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            diff(
                &plan(&["six==1.16.0", "flask==3.0.3", "idna==3.10"]),
                &plan(&["six==1.17.0", "idna==3.10", "packaging==24.1"])
            ),
            ["- flask 3.0.3", "+ packaging 24.1", "six 1.16.0 -> 1.17.0"]
        );
        assert!(diff(&plan(&["a==1"]), &plan(&["a==1"])).is_empty());
    }

    #[test]
    fn names_normalise_as_pep_503_says() {
        assert_eq!(normalise("Django"), "django");
        assert_eq!(normalise("zope.interface"), "zope-interface");
        assert_eq!(normalise("Foo__Bar-.baz"), "foo-bar-baz");
    }

    #[test]
    fn wheels_for_any_image_are_tied_to_the_interpreter_only() {
        assert_eq!(
            package("six-1.16.0-py2.py3-none-any.whl").tie,
            Tie::Interpreter
        );
        assert_eq!(
            package("pillow-11.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").tie,
            Tie::Interpreter
        );
        assert_eq!(
            package(
                "psycopg2_binary-2.9.10-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
            )
            .tie,
            Tie::Interpreter
        );
        assert_eq!(package("uwsgi-2.0.28.tar.gz").tie, Tie::Image);
        assert_eq!(
            package("mine-1.0-cp311-cp311-linux_x86_64.whl").tie,
            Tie::Image
        );
    }

    #[test]
    fn the_from_image_is_in_the_key_only_of_packages_tied_to_it() {
        let interpreter = interpreter();
        let inputs = |from| LayerInputs {
            interpreter: &interpreter,
            prefix: "opt/deps",
            options: &[],
            from_digest: from,
        };
        let wheel = package("six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(
            layer_key(&wheel, inputs("sha256:aa")),
            layer_key(&wheel, inputs("sha256:bb"))
        );
        let sdist = package("uwsgi-2.0.28.tar.gz");
        assert_ne!(
            layer_key(&sdist, inputs("sha256:aa")),
            layer_key(&sdist, inputs("sha256:bb"))
        );
        // The version, the artifact and the prefix are in every key.
        let bumped = Package {
            version: "1.17.0".into(),
            ..wheel.clone()
        };
        assert_ne!(
            layer_key(&wheel, inputs("a")),
            layer_key(&bumped, inputs("a"))
        );
        let elsewhere = LayerInputs {
            prefix: "usr/lib/deps",
            ..inputs("a")
        };
        assert_ne!(layer_key(&wheel, inputs("a")), layer_key(&wheel, elsewhere));
    }
}
