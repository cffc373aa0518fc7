//! The native builder's package layers: a pip install or `npm ci` step
//! taken apart into one layer per package (or small group, see
//! [`crate::packages::stack`]) and a glue layer on top.
//!
//! 1. The plan is resolved inside the `from` image (pip's `--dry-run
//!    --report`: its interpreter decides which wheel each package is; npm's
//!    lock, read with npm's configuration and Node's platform there).
//! 2. Each stack layer has a key of its packages' keys. A layer whose
//!    record is known and whose blob the target still holds is reused
//!    as it is; the others are installed, each package alone (`--no-deps`,
//!    checked by its hash) into a folder of its own, in parallel, inside
//!    the image.
//! 3. A layer holds what its packages wrote, later packages winning a
//!    path within a group, minus what belongs to the glue: console
//!    scripts (`bin/`, whose shebang is the image's interpreter) and
//!    top-level `.pth` files. A layer's bytes depend on its key only, so a
//!    forced rebuild makes the same digests.
//! 4. The glue layer holds those files, and every path two layers both
//!    write with the bytes of the package pip installs last (a namespace
//!    package's `__init__.py`), so the image's files are exactly those of
//!    one pip install of the whole plan. For npm, whose packages each have
//!    a folder of their own, the glue is what `npm ci` writes beside them:
//!    the manifests the step copied, `.bin` links and the hidden lockfile.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use cache_proto::Key;

use super::BuildError;
use super::npm_install;
use super::package_install::{self, InImage};
use crate::client::records::RecordStore;
use crate::image::Location;
use crate::image::manifest::OciDigest;
use crate::image::registry::Registry;
use crate::pack::layer::{self, PackOptions};
use crate::packages::npm::{self, NodePlatform, NpmConfig, NpmPlan};
use crate::packages::pip::{self, PipInstall};
use crate::packages::plan::{LayerInputs, Package, Plan, layer_key, with_needs};
use crate::packages::stack::{Hint, StackLayer, plan_stack};
use crate::packages::step::InstallStep;

/// What package layers need besides the native spec.
#[derive(Debug, Clone, Copy)]
pub struct PackageLayers<'a> {
    /// The install step.
    pub step: &'a InstallStep,
    /// Where the layer records are kept.
    pub records: &'a RecordStore,
    /// Where the base goes: a reused layer's blob must be there.
    pub target: &'a Location,
    /// At most this many layers in the image.
    pub max_layers: usize,
    /// Whether recorded layers are reused (`--force` builds every one).
    pub reuse: bool,
}

/// One file a layer's packages wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFile {
    /// Relative to the prefix, `/`-separated.
    pub path: String,
    /// SHA-256 of its bytes (or of the link's target).
    pub sha256: String,
    /// Executable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// A symbolic link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Which of the layer's packages wrote it (the last one, in a group).
    pub package: usize,
}

/// A file of the glue layer, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlueFile {
    /// Relative to the prefix.
    pub path: String,
    /// Executable.
    #[serde(default)]
    pub executable: bool,
    /// Its bytes, base64.
    pub content: String,
}

/// What is remembered of a built stack layer, under its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Format version.
    pub version: u32,
    /// The blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The blob's size.
    pub size: u64,
    /// Its packages, `name==version`.
    pub packages: Vec<String>,
    /// Every file its packages wrote (those of the glue included).
    pub files: Vec<LayerFile>,
    /// The bytes of its files that always go to the glue.
    pub glue: Vec<GlueFile>,
    /// The repository (or layout) it was pushed to, from which another
    /// project's base mounts it (`registry/repository`, `oci:DIR`).
    #[serde(default)]
    pub at: Option<String>,
}

impl LayerRecord {
    /// Whether every path it names stays inside the prefix.
    pub fn is_safe(&self) -> bool {
        let safe = |path: &str| {
            !path.is_empty()
                && Path::new(path)
                    .components()
                    .all(|part| matches!(part, std::path::Component::Normal(_)))
        };
        self.files.iter().all(|file| safe(&file.path))
            && self.glue.iter().all(|file| safe(&file.path))
    }
}

/// Whether `record`'s blob is at `target`, or could be made present there
/// from where it was pushed (a mount on the same registry): then the
/// layer is reused, neither built nor uploaded.
async fn present(registry: &Registry, target: &Location, record: &LayerRecord) -> bool {
    if target
        .has_blob(registry, &record.digest)
        .await
        .unwrap_or(false)
    {
        return true;
    }
    let Some(source) = record
        .at
        .as_deref()
        .and_then(|at| Location::parse(at, Path::new("")).ok())
    else {
        return false;
    };
    target
        .receive_blob(registry, &source, &record.digest, record.size)
        .await
        .is_ok()
}

/// What is remembered of a package's size (its installed bytes), under
/// [`size_key`] of its layer key: the layer budget gives the largest
/// packages layers of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeHint {
    /// Format version.
    pub version: u32,
    /// The bytes its files hold.
    pub bytes: u64,
}

/// Where a package's [`SizeHint`] is kept: beside its layer key.
pub fn size_key(package: &Key) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-package-size/v1\0");
    hasher.update(package.as_bytes());
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// The versions of a package the builds of one prefix have seen, newest
/// last (at most [`VERSIONS_KEPT`]): how often it changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenVersions {
    /// Format version.
    pub version: u32,
    /// The versions, oldest first.
    pub versions: Vec<String>,
}

/// How many versions of a package [`SeenVersions`] keeps.
pub const VERSIONS_KEPT: usize = 8;

/// Where a package's [`SeenVersions`] are kept: its name and the prefix.
fn versions_key(package: &Package, prefix: &str) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-package-versions/v1\0");
    hasher.update(package.name.as_bytes());
    hasher.update(b"\0");
    hasher.update(prefix.as_bytes());
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// The versions seen of `package` (none when the cache does not answer).
async fn seen_versions(layers: PackageLayers<'_>, package: &Package) -> Vec<String> {
    let key = versions_key(package, layers.step.prefix());
    match layers.records.get::<SeenVersions>(&key).await {
        Ok(Some(seen)) if seen.version == 1 => seen.versions,
        _ => Vec::new(),
    }
}

/// Adds `package`'s version to `versions`, those seen before this build,
/// when it is a new one.
async fn note_version(layers: PackageLayers<'_>, package: &Package, mut versions: Vec<String>) {
    if versions.last() == Some(&package.version) {
        return;
    }
    versions.push(package.version.clone());
    let excess = versions.len().saturating_sub(VERSIONS_KEPT);
    versions.drain(..excess);
    let key = versions_key(package, layers.step.prefix());
    let seen = SeenVersions {
        version: 1,
        versions,
    };
    if let Err(error) = layers.records.put(&key, &seen).await {
        tracing::debug!(%error, "could not record a package's versions");
    }
}

/// Whether `path` (relative to the prefix), written by a package of
/// `step`, always belongs to the glue: pip's console scripts and
/// top-level `.pth` files. (An npm package writes its own folder only.)
pub fn always_glue(step: &InstallStep, path: &str) -> bool {
    matches!(step, InstallStep::Pip(_))
        && (path.starts_with("bin/") || (!path.contains('/') && path.ends_with(".pth")))
}

/// The key of a stack layer: its packages' keys, in order.
pub fn stack_key(keys: &[Key]) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachectl-stack-layer/v1\0");
    for key in keys {
        hasher.update(key.as_bytes());
    }
    Key::from_bytes(*hasher.finalize().as_bytes())
}

/// Every file under `root`, relative and `/`-separated, sorted.
fn scan(root: &Path) -> std::io::Result<Vec<(String, FileKind)>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let relative = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                pending.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
                found.push((relative, FileKind::Link(target)));
            } else {
                let executable = meta.permissions().mode() & 0o111 != 0;
                found.push((relative, FileKind::File { executable }));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FileKind {
    File { executable: bool },
    Link(String),
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    OciDigest::sha256_of_file(path).map(|digest| digest.encoded().to_owned())
}

/// A package installed into its own folder this run.
struct Installed {
    /// The folder (its root is the prefix).
    dir: PathBuf,
    files: Vec<(String, FileKind, String)>,
}

/// Reads what the package in `dir` wrote; drops pip's `REQUESTED` mark of
/// a package the project did not ask for (installed alone, every package
/// looks requested; installed with the plan, only the project's are).
fn installed(step: &InstallStep, dir: &Path, package: &Package) -> std::io::Result<Installed> {
    if matches!(step, InstallStep::Pip(_)) && !package.requested {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".dist-info") {
                let mark = entry.path().join("REQUESTED");
                if mark.is_file() {
                    std::fs::remove_file(mark)?;
                }
            }
        }
    }
    let mut files = Vec::new();
    for (path, kind) in scan(dir)? {
        let sha256 = match &kind {
            FileKind::File { .. } => sha256_file(&dir.join(&path))?,
            FileKind::Link(target) => format!("{:x}", Sha256::digest(target.as_bytes())),
        };
        files.push((path, kind, sha256));
    }
    Ok(Installed {
        dir: dir.to_owned(),
        files,
    })
}

/// One stack layer as this run has it.
#[derive(Debug, Clone)]
pub struct StackResult {
    /// The layer's name (its package, or `group-N`).
    pub name: String,
    /// Its packages, `name==version`.
    pub packages: Vec<String>,
    /// Its blob digest.
    pub digest: OciDigest,
    /// Its diff id.
    pub diff_id: String,
    /// Its size.
    pub size: u64,
    /// Its file, when this run built it; `None` when reused.
    pub file: Option<PathBuf>,
}

/// The layers package layers made: the stack, bottom first, then the glue
/// (when it has files).
#[derive(Debug)]
pub struct Built {
    /// The resolved plan.
    pub plan: Plan,
    /// Dependency layers, bottom first.
    pub stack: Vec<StackResult>,
    /// The glue layer.
    pub glue: Option<StackResult>,
    /// Where the packages are, relative to the image root.
    pub prefix: String,
    /// What the build should say: packages writing one path with
    /// different bytes, and which one's the image holds.
    pub warnings: Vec<String>,
}

/// A plan as resolved, with what its kind needs later.
enum Resolved {
    /// pip's.
    Pip(Plan),
    /// npm's, and the folder the step prepared (its manifests).
    Npm {
        npm: Box<NpmPlan>,
        prepared: tempfile::TempDir,
    },
}

impl Resolved {
    fn plan(&self) -> &Plan {
        match self {
            Self::Pip(plan) => plan,
            Self::Npm { npm, .. } => &npm.plan,
        }
    }
}

/// What package layers made of the step.
#[derive(Debug)]
pub enum Stacked {
    /// The stack.
    Built(Box<Built>),
    /// Why the step is one layer after all (a lock that cannot say what
    /// its install writes).
    OneLayer(String),
}

/// Resolves the plan of `step` inside the image.
async fn resolve(
    in_image: &impl InImage,
    step: &InstallStep,
    staging: &Path,
) -> Result<Result<Resolved, String>, BuildError> {
    let io = BuildError::io;
    let base = |invalid: crate::invalid::Invalid| BuildError::Base(invalid.to_string());
    let out = tempfile::tempdir_in(staging).map_err(io("creating a folder"))?;
    let out_text = out.path().display().to_string();
    match step {
        InstallStep::Pip(pip) => {
            let report = out.path().join("plan.json");
            let command = pip
                .resolve_command(&report.display().to_string())
                .map_err(base)?
                .replace("{out}", &out_text);
            in_image.run(out.path(), &command).await?;
            let bytes = std::fs::read(&report).map_err(io("reading pip's installation report"))?;
            Ok(Ok(Resolved::Pip(pip::read_report(&bytes).map_err(base)?)))
        }
        InstallStep::Npm(step) => {
            let command = step
                .resolve_command()
                .map_err(base)?
                .replace("{out}", &out_text);
            in_image.run(out.path(), &command).await?;
            let read = |name: &str| {
                std::fs::read(out.path().join(name)).map_err(io("reading what npm and Node said"))
            };
            let config = NpmConfig::parse(&read(npm::CONFIG_FILE)?).map_err(base)?;
            let platform = NodePlatform::parse(&read(npm::PLATFORM_FILE)?).map_err(base)?;
            let folder = out.path().join(&step.prefix);
            let outside = scan(out.path())
                .map_err(io("reading the prepared folder"))?
                .into_iter()
                .any(|(path, _)| {
                    !path.starts_with(&format!("{}/", step.prefix))
                        && path != npm::CONFIG_FILE
                        && path != npm::PLATFORM_FILE
                });
            if outside {
                return Ok(Err(format!("the step writes outside /{}", step.prefix)));
            }
            let lock = ["npm-shrinkwrap.json", "package-lock.json"]
                .into_iter()
                .map(|name| folder.join(name))
                .find(|path| path.is_file());
            let Some(lock) = lock else {
                return Ok(Err("npm ci finds no package-lock.json".into()));
            };
            let bytes = std::fs::read(&lock).map_err(io("reading package-lock.json"))?;
            let Ok(package_json) = std::fs::read(folder.join("package.json")) else {
                return Ok(Err("npm ci finds no package.json".into()));
            };
            tracing::debug!(node = %platform.node, "npm plan read for the image's Node");
            Ok(npm::read_lock(&bytes, &package_json, &config, &platform)
                .map_err(base)?
                .map(|npm| Resolved::Npm {
                    npm: Box::new(npm),
                    prepared: out,
                })
                .map_err(|unsupported| unsupported.to_string()))
        }
    }
}

/// Resolves, installs what is not reused, and packs the stack and glue.
pub async fn build(
    registry: &Registry,
    in_image: &impl InImage,
    layers: PackageLayers<'_>,
    from_digest: &str,
    from_layers: usize,
    staging: &Path,
) -> Result<Stacked, BuildError> {
    let io = BuildError::io;
    let started = std::time::Instant::now();
    // 1. The plan, resolved inside the image.
    let resolved = match resolve(in_image, layers.step, staging).await? {
        Ok(resolved) => resolved,
        Err(why) => return Ok(Stacked::OneLayer(why)),
    };
    let plan = resolved.plan();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        packages = plan.packages.len(),
        "plan resolved"
    );

    // 2. The stack and each layer's key; what is reusable.
    let options: &[String] = match layers.step {
        InstallStep::Pip(pip) => &pip.options,
        InstallStep::Npm(_) => &[],
    };
    let inputs = LayerInputs {
        interpreter: &plan.interpreter,
        prefix: layers.step.prefix(),
        options,
        from_digest,
    };
    let own_keys: Vec<Option<Key>> = plan
        .packages
        .iter()
        .map(|package| package.reusable().then(|| layer_key(package, inputs)))
        .collect();
    // A package whose layer depends on others' (an install script that
    // sees its dependencies) has their keys in its own.
    let package_keys: Vec<Option<Key>> = plan
        .packages
        .iter()
        .zip(&own_keys)
        .map(|(package, own)| {
            let needs: Option<Vec<Key>> = package
                .needs
                .iter()
                .map(|&at| own_keys.get(at).copied().flatten())
                .collect();
            Some(with_needs((*own)?, &needs?))
        })
        .collect();
    // Hints matter only past the budget, where the packages that change
    // most often, then the largest, keep their own layers: asked for then
    // only (and the versions seen recorded then only).
    let over_budget = plan.packages.len() + from_layers + 1 > layers.max_layers;
    // The versions seen are kept to add this build's to them at the end.
    let (hints, seen): (Vec<Hint>, Vec<Vec<String>>) = if over_budget {
        let asks = plan
            .packages
            .iter()
            .zip(&package_keys)
            .map(|(package, key)| async move {
                let bytes = match key {
                    Some(key) => match layers.records.get::<SizeHint>(&size_key(key)).await {
                        Ok(Some(hint)) if hint.version == 1 => Some(hint.bytes),
                        _ => None,
                    },
                    None => None,
                };
                let versions = seen_versions(layers, package).await;
                let hint = Hint {
                    bytes,
                    changes: versions.len().saturating_sub(1) as u32,
                };
                (hint, versions)
            });
        futures::future::join_all(asks).await.into_iter().unzip()
    } else {
        (vec![Hint::default(); plan.packages.len()], Vec::new())
    };
    let stack = plan_stack(
        &plan.packages,
        |at| hints[at],
        from_layers,
        layers.max_layers,
    )
    .ok_or_else(|| {
        BuildError::Base(format!(
            "the from image has {from_layers} layers: no room for package layers under {}",
            layers.max_layers
        ))
    })?;
    let keys: Vec<Option<Key>> = stack
        .iter()
        .map(|layer| {
            layer
                .packages
                .iter()
                .map(|&at| package_keys[at])
                .collect::<Option<Vec<Key>>>()
                .map(|keys| stack_key(&keys))
        })
        .collect();
    // Every layer's record and blob asked for at once: a plan of a hundred
    // layers is a hundred round trips to the cache and the registry.
    let lookups = keys.iter().map(|key| async move {
        let key = key.filter(|_| layers.reuse)?;
        match layers.records.get::<LayerRecord>(&key).await {
            // A record naming a path outside the prefix is not used: the
            // cache is not trusted to write the runner's files.
            Ok(Some(record)) if record.version == 1 && record.is_safe() => {
                present(registry, layers.target, &record)
                    .await
                    .then_some(record)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "package layer record unreachable: building the layer");
                None
            }
        }
    });
    let mut records: Vec<Option<LayerRecord>> = futures::future::join_all(lookups).await;

    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "records looked up"
    );
    // 3. Install what is not reused, each package alone, in parallel.
    let work = tempfile::tempdir_in(staging).map_err(io("creating a folder"))?;
    let mut built_packages: HashMap<usize, Installed> = HashMap::new();
    let mut to_build: Vec<usize> = (0..stack.len())
        .filter(|&at| records[at].is_none())
        .collect();
    // A glue path whose winning bytes only a reused layer has is found by
    // building that layer too (rare: the bytes usually match a built one).
    for _round in 0..2 {
        let packages: Vec<usize> = to_build
            .iter()
            .flat_map(|&at| stack[at].packages.iter().copied())
            .filter(|at| !built_packages.contains_key(at))
            .collect();
        match (layers.step, &resolved) {
            (InstallStep::Pip(pip), _) => {
                package_install::install(in_image, pip, plan, &packages, work.path()).await?
            }
            (InstallStep::Npm(step), Resolved::Npm { npm, .. }) => {
                npm_install::install(in_image, step, npm, &packages, work.path()).await?
            }
            (InstallStep::Npm(_), Resolved::Pip(_)) => {
                return Err(BuildError::Base("an npm step resolved as pip".into()));
            }
        }
        for at in packages {
            let dir = work.path().join(format!("pkgs/{at}"));
            let found = installed(layers.step, &dir, &plan.packages[at])
                .map_err(io("reading what a package installed"))?;
            built_packages.insert(at, found);
        }
        let missing = glue_sources(layers.step, &stack, &records, &built_packages).missing;
        if missing.is_empty() {
            break;
        }
        to_build.extend(missing);
        to_build.sort_unstable();
        to_build.dedup();
        for &at in &to_build {
            records[at] = None;
        }
    }

    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "packages installed"
    );
    // 4. Pack the built layers (in parallel), then the glue.
    let prefix = layers.step.prefix().to_owned();
    let mut results = Vec::with_capacity(stack.len());
    let mut new_records = Vec::new();
    let mut packs = Vec::new();
    for (at, layer) in stack.iter().enumerate() {
        if let Some(record) = &records[at] {
            let digest = OciDigest::parse(&record.digest).map_err(|invalid| {
                BuildError::Base(format!("a package layer record: {invalid}"))
            })?;
            results.push(Some(StackResult {
                name: layer.name.clone(),
                packages: record.packages.clone(),
                digest,
                diff_id: record.diff_id.clone(),
                size: record.size,
                file: None,
            }));
            continue;
        }
        results.push(None);
        let tree = work.path().join(format!("layers/{at}"));
        let record_files =
            union_tree(layer, &built_packages, &tree).map_err(io("assembling a package layer"))?;
        let glue = record_files
            .iter()
            .filter(|file| always_glue(layers.step, &file.path))
            .map(|file| glue_file(&tree.join(&file.path), file))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io("reading a console script"))?;
        for file in record_files
            .iter()
            .filter(|file| always_glue(layers.step, &file.path))
        {
            std::fs::remove_file(tree.join(&file.path)).map_err(io("moving a file to the glue"))?;
        }
        let packages: Vec<String> = layer
            .packages
            .iter()
            .map(|&at| format!("{}=={}", plan.packages[at].name, plan.packages[at].version))
            .collect();
        new_records.push((at, packages, record_files, glue));
        let (staging, prefix) = (staging.to_owned(), prefix.clone());
        packs.push(tokio::task::spawn_blocking(move || {
            layer::pack_with(
                &tree,
                &staging,
                PackOptions {
                    prefix: &prefix,
                    ..PackOptions::default()
                },
            )
        }));
    }
    let packed = futures::future::try_join_all(packs)
        .await
        .map_err(|e| io("packing a package layer")(std::io::Error::other(e)))?;
    for ((at, packages, files, glue), packed) in new_records.into_iter().zip(packed) {
        let packed = packed.map_err(io("packing a package layer"))?;
        let record = LayerRecord {
            version: 1,
            digest: packed.digest.to_string(),
            diff_id: packed.diff_id.clone(),
            size: packed.size,
            packages: packages.clone(),
            files,
            glue,
            at: Some(layers.target.name()),
        };
        let file = keep(packed.file)?;
        results[at] = Some(StackResult {
            name: stack[at].name.clone(),
            packages,
            digest: packed.digest,
            diff_id: packed.diff_id,
            size: packed.size,
            file: Some(file),
        });
        records[at] = Some(record);
    }
    let stack_results: Vec<StackResult> = results.into_iter().flatten().collect();
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "layers packed");

    // The glue: always-glue files of every layer, and paths two layers write.
    // Where the whole step runs when packages write a path differently;
    // kept until the glue is written.
    let whole = tempfile::tempdir_in(staging).map_err(io("creating a folder"))?;
    let Glue {
        mut sources,
        missing,
        conflicts,
    } = glue_sources(layers.step, &stack, &records, &built_packages);
    if !missing.is_empty() {
        return Err(BuildError::Base(
            "the bytes of a file two package layers write could not be found".into(),
        ));
    }
    let mut warnings = Vec::new();
    match (layers.step, &resolved) {
        (InstallStep::Pip(pip), _) if !conflicts.is_empty() => {
            warnings =
                pip_conflicts(in_image, pip, plan, &conflicts, whole.path(), &mut sources).await?;
        }
        (InstallStep::Npm(_), Resolved::Npm { npm, prepared }) => {
            let folder = prepared.path().join(layers.step.prefix());
            npm_glue(npm, &folder, &mut sources).map_err(io("reading the prepared manifests"))?;
        }
        _ => {}
    }
    let glue_tree = work.path().join("glue");
    std::fs::create_dir_all(&glue_tree).map_err(io("creating the glue layer"))?;
    for (path, source) in &sources {
        let destination = glue_tree.join(path);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating the glue layer"))?;
        }
        source
            .write(&destination)
            .map_err(io("writing the glue layer"))?;
    }
    let glue = if sources.is_empty() {
        None
    } else {
        let (staging_path, prefix_text) = (staging.to_owned(), prefix.clone());
        let packed = tokio::task::spawn_blocking(move || {
            layer::pack_with(
                &glue_tree,
                &staging_path,
                PackOptions {
                    prefix: &prefix_text,
                    ..PackOptions::default()
                },
            )
        })
        .await
        .map_err(|e| io("packing the glue layer")(std::io::Error::other(e)))?
        .map_err(io("packing the glue layer"))?;
        Some(StackResult {
            name: "glue".into(),
            packages: Vec::new(),
            digest: packed.digest.clone(),
            diff_id: packed.diff_id.clone(),
            size: packed.size,
            file: Some(keep(packed.file)?),
        })
    };

    // The records of the layers built (best effort: a build never fails
    // for a cache that does not answer).
    let puts = keys.iter().enumerate().filter_map(|(at, key)| {
        let built = stack_results
            .get(at)
            .is_some_and(|result| result.file.is_some());
        let (key, record) = (key.as_ref()?, records[at].as_ref()?);
        built.then_some(async move {
            if let Err(error) = layers.records.put(key, record).await {
                tracing::warn!(%error, "could not record a package layer");
            }
        })
    });
    futures::future::join_all(puts).await;
    if over_budget {
        futures::future::join_all(
            plan.packages
                .iter()
                .zip(seen)
                .map(|(package, versions)| note_version(layers, package, versions)),
        )
        .await;
    }
    // Each package built: its installed bytes, for the budget next time.
    let hints = built_packages.iter().filter_map(|(&at, found)| {
        let key = size_key(package_keys.get(at)?.as_ref()?);
        let bytes: u64 = found
            .files
            .iter()
            .filter(|(_, kind, _)| matches!(kind, FileKind::File { .. }))
            .filter_map(|(path, ..)| std::fs::metadata(found.dir.join(path)).ok())
            .map(|meta| meta.len())
            .sum();
        Some(async move {
            let hint = SizeHint { version: 1, bytes };
            if let Err(error) = layers.records.put(&key, &hint).await {
                tracing::debug!(%error, "could not record a package's size");
            }
        })
    });
    futures::future::join_all(hints).await;
    Ok(Stacked::Built(Box::new(Built {
        warnings,
        plan: plan.clone(),
        stack: stack_results,
        glue,
        prefix,
    })))
}

/// The glue of a plan whose packages write one path with different bytes:
/// those bytes as pip leaves them after the whole step (which package pip
/// installs last depends on its own ordering of the whole plan), and what
/// the build says about it.
async fn pip_conflicts(
    in_image: &impl InImage,
    pip: &PipInstall,
    plan: &Plan,
    conflicts: &[(String, Vec<usize>, usize)],
    whole: &Path,
    sources: &mut BTreeMap<String, GlueSource>,
) -> Result<Vec<String>, BuildError> {
    let name = |at: usize| {
        let package = &plan.packages[at];
        format!("{}=={}", package.name, package.version)
    };
    let warnings = conflicts
        .iter()
        .map(|(path, writers, winner)| {
            let writers: Vec<String> = writers.iter().map(|&at| name(at)).collect();
            format!(
                "{} write /{}/{path} with different bytes: {}'s are in the image, as pip installs it last",
                writers.join(" and "),
                pip.prefix,
                name(*winner)
            )
        })
        .collect();
    let out = whole.display().to_string();
    let mut command = pip.whole_step().replace("{out}", &out);
    let installed = format!("{out}/{}", pip.prefix);
    let prefix = format!("/{}", pip.prefix);
    if let Some(compile) = pip
        .compile_command(&installed, &prefix)
        .map_err(|invalid| BuildError::Base(invalid.to_string()))?
    {
        command = format!("{command} && {{ {compile} >/dev/null 2>&1 || true; }}");
    }
    in_image.run(whole, &command).await?;
    for (path, ..) in conflicts {
        let file = Path::new(&installed).join(path);
        let executable = std::fs::metadata(&file)
            .map(|meta| meta.permissions().mode() & 0o111 != 0)
            .map_err(BuildError::io("reading what pip installed"))?;
        sources.insert(path.clone(), GlueSource::Built(file, executable));
    }
    Ok(warnings)
}

/// The glue of an npm plan: what the step put in the folder before `npm
/// ci` (its manifests), the hidden lockfile and the `.bin` links.
fn npm_glue(
    npm: &NpmPlan,
    prepared: &Path,
    sources: &mut BTreeMap<String, GlueSource>,
) -> std::io::Result<()> {
    for (path, kind) in scan(prepared)? {
        let source = match kind {
            FileKind::File { executable } => GlueSource::Built(prepared.join(&path), executable),
            FileKind::Link(target) => GlueSource::Link(target),
        };
        sources.insert(path, source);
    }
    if !npm.plan.packages.is_empty() {
        sources.insert(
            "node_modules/.package-lock.json".into(),
            GlueSource::Kept(npm.hidden_lock.clone().into_bytes(), false),
        );
    }
    for (link, target) in npm.bin_links() {
        sources.insert(link, GlueSource::Link(target));
    }
    for folder in &npm.left_folders {
        sources.entry(folder.clone()).or_insert(GlueSource::Folder);
    }
    Ok(())
}

fn keep(file: tempfile::NamedTempFile) -> Result<PathBuf, BuildError> {
    file.into_temp_path().keep().map_err(|e| BuildError::Io {
        what: "keeping a layer file".into(),
        source: e.error,
    })
}

fn glue_file(path: &Path, file: &LayerFile) -> std::io::Result<GlueFile> {
    let content = match &file.link {
        Some(target) => target.clone().into_bytes(),
        None => std::fs::read(path)?,
    };
    Ok(GlueFile {
        path: file.path.clone(),
        executable: file.executable,
        content: base64::engine::general_purpose::STANDARD.encode(content),
    })
}

/// Builds `layer`'s tree in `tree` from its packages' folders (later
/// packages winning a path, as pip's own install order does); returns its
/// files.
fn union_tree(
    layer: &StackLayer,
    built: &HashMap<usize, Installed>,
    tree: &Path,
) -> std::io::Result<Vec<LayerFile>> {
    std::fs::create_dir_all(tree)?;
    let mut files: BTreeMap<String, LayerFile> = BTreeMap::new();
    for (member, at) in layer.packages.iter().enumerate() {
        let installed = built
            .get(at)
            .ok_or_else(|| std::io::Error::other("a package of the layer was not installed"))?;
        for (path, kind, sha256) in &installed.files {
            let destination = tree.join(path);
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::symlink_metadata(&destination).is_ok() {
                std::fs::remove_file(&destination)?;
            }
            let (executable, link) = match kind {
                FileKind::File { executable } => {
                    std::fs::hard_link(installed.dir.join(path), &destination)?;
                    (*executable, None)
                }
                FileKind::Link(target) => {
                    std::os::unix::fs::symlink(target, &destination)?;
                    (false, Some(target.clone()))
                }
            };
            files.insert(
                path.clone(),
                LayerFile {
                    path: path.clone(),
                    sha256: sha256.clone(),
                    executable,
                    link,
                    package: member,
                },
            );
        }
    }
    Ok(files.into_values().collect())
}

/// Where a glue file's bytes come from.
enum GlueSource {
    /// A file a package installed this run.
    Built(PathBuf, bool),
    /// Bytes a record kept.
    Kept(Vec<u8>, bool),
    /// A link.
    Link(String),
    /// A folder, maybe empty.
    Folder,
}

impl GlueSource {
    fn write(&self, destination: &Path) -> std::io::Result<()> {
        let set_mode = |executable: bool| {
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(destination, std::fs::Permissions::from_mode(mode))
        };
        match self {
            Self::Built(path, executable) => {
                std::fs::copy(path, destination)?;
                set_mode(*executable)
            }
            Self::Kept(bytes, executable) => {
                std::fs::write(destination, bytes)?;
                set_mode(*executable)
            }
            Self::Link(target) => std::os::unix::fs::symlink(target, destination),
            Self::Folder => std::fs::create_dir_all(destination),
        }
    }
}

/// What the glue layer holds, as [`glue_sources`] finds it.
struct Glue {
    /// Each path and where its bytes come from.
    sources: BTreeMap<String, GlueSource>,
    /// Stack layers to build for the bytes of a path that no built
    /// package and no record has.
    missing: Vec<usize>,
    /// Paths packages write with different bytes: the path, the packages
    /// writing it, and the one whose bytes are in the image (pip's last).
    conflicts: Vec<(String, Vec<usize>, usize)>,
}

/// The glue's files and where each one's bytes come from.
fn glue_sources(
    step: &InstallStep,
    stack: &[StackLayer],
    records: &[Option<LayerRecord>],
    built: &HashMap<usize, Installed>,
) -> Glue {
    // Every path: the layers writing it, and the winner (the package
    // latest in the plan) with its hash.
    struct Claim {
        layers: Vec<usize>,
        winner: (usize, usize, String, bool, Option<String>),
        /// Every package writing it, with the hash of what it writes.
        writers: Vec<(usize, String)>,
    }
    let mut claims: BTreeMap<String, Claim> = BTreeMap::new();
    let mut by_hash: HashMap<String, (PathBuf, bool)> = HashMap::new();
    for (at, layer) in stack.iter().enumerate() {
        let files: Vec<(String, usize, String, bool, Option<String>)> = match &records[at] {
            Some(record) => record
                .files
                .iter()
                .map(|file| {
                    let package = layer.packages.get(file.package).copied().unwrap_or(0);
                    (
                        file.path.clone(),
                        package,
                        file.sha256.clone(),
                        file.executable,
                        file.link.clone(),
                    )
                })
                .collect(),
            None => layer
                .packages
                .iter()
                .filter_map(|package| built.get(package).map(|found| (package, found)))
                .flat_map(|(&package, found)| {
                    found.files.iter().map(move |(path, kind, sha256)| {
                        let (executable, link) = match kind {
                            FileKind::File { executable } => (*executable, None),
                            FileKind::Link(target) => (false, Some(target.clone())),
                        };
                        (path.clone(), package, sha256.clone(), executable, link)
                    })
                })
                .collect(),
        };
        for (path, package, sha256, executable, link) in files {
            let claim = claims.entry(path).or_insert_with(|| Claim {
                layers: Vec::new(),
                winner: (at, package, sha256.clone(), executable, link.clone()),
                writers: Vec::new(),
            });
            claim.writers.push((package, sha256.clone()));
            if !claim.layers.contains(&at) {
                claim.layers.push(at);
            }
            if package >= claim.winner.1 {
                claim.winner = (at, package, sha256, executable, link);
            }
        }
    }
    for found in built.values() {
        for (path, kind, sha256) in &found.files {
            if let FileKind::File { executable } = kind {
                by_hash
                    .entry(sha256.clone())
                    .or_insert_with(|| (found.dir.join(path), *executable));
            }
        }
    }
    let mut sources = BTreeMap::new();
    let mut missing = Vec::new();
    let mut conflicts = Vec::new();
    for (path, claim) in claims {
        if !(always_glue(step, &path) || claim.layers.len() > 1) {
            continue;
        }
        let (layer, package, sha256, executable, link) = claim.winner;
        if claim.writers.iter().any(|(_, hash)| *hash != sha256) {
            let mut writers: Vec<usize> = claim.writers.iter().map(|(at, _)| *at).collect();
            writers.sort_unstable();
            writers.dedup();
            conflicts.push((path.clone(), writers, package));
        }
        if let Some(target) = link {
            sources.insert(path, GlueSource::Link(target));
            continue;
        }
        if let Some(found) = built.get(&package) {
            sources.insert(
                path.clone(),
                GlueSource::Built(found.dir.join(&path), executable),
            );
            continue;
        }
        let kept = records[layer].as_ref().and_then(|record| {
            record
                .glue
                .iter()
                .find(|file| file.path == path)
                .and_then(|file| {
                    base64::engine::general_purpose::STANDARD
                        .decode(&file.content)
                        .ok()
                })
        });
        match (kept, by_hash.get(&sha256)) {
            (Some(bytes), _) => {
                sources.insert(path, GlueSource::Kept(bytes, executable));
            }
            (None, Some((file, _))) => {
                sources.insert(path, GlueSource::Built(file.clone(), executable));
            }
            (None, None) => missing.push(layer),
        }
    }
    missing.sort_unstable();
    missing.dedup();
    Glue {
        sources,
        missing,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_naming_a_path_outside_the_prefix_is_not_used() {
        let file = |path: &str| LayerFile {
            path: path.into(),
            sha256: "00".into(),
            executable: false,
            link: None,
            package: 0,
        };
        let record = |path: &str| LayerRecord {
            version: 1,
            digest: format!("sha256:{}", "0".repeat(64)),
            diff_id: String::new(),
            size: 1,
            packages: Vec::new(),
            files: vec![file("six.py"), file(path)],
            glue: Vec::new(),
            at: None,
        };
        assert!(record("bin/six").is_safe());
        for bad in ["../../etc/cron.d/x", "/etc/passwd", "a/../../b", ""] {
            assert!(!record(bad).is_safe(), "{bad}");
        }
    }

    #[test]
    fn console_scripts_and_top_level_pth_files_are_glue() {
        let pip = InstallStep::recognise("pip install --target {out}/opt/deps flask").unwrap();
        assert!(always_glue(&pip, "bin/flask"));
        assert!(always_glue(&pip, "distutils-precedence.pth"));
        assert!(!always_glue(&pip, "flask/cli.py"));
        assert!(!always_glue(&pip, "pkg/extra.pth"));
        let npm = InstallStep::recognise("cd {out}/app && npm ci").unwrap();
        assert!(!always_glue(&npm, "bin/flask"));
    }
}
