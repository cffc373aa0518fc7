//! The npm side of package layers: recognising a native install step that
//! ends `cd {out}/DIR && npm ci …`, and reading the project's
//! `package-lock.json` (version 2 or 3: every package at its final
//! `node_modules/…` path, with its tarball and integrity) into a [`Plan`]
//! for the image's platform and npm's configuration, as `npm ci` would
//! install it.
//!
//! What npm decides is asked of npm itself, inside the image, with the
//! step's own flags ([`NpmInstall::resolve_command`]): the registry (a
//! lock written against registry.npmjs.org installs from the configured
//! mirror), what is omitted (`--omit=dev`, `NODE_ENV=production`), whether
//! scripts and bin links run; and of Node the platform that decides which
//! optional packages (`@esbuild/linux-x64`) are installed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::plan::{Artifact, ArtifactHash, Interpreter, Package, Plan, Tie};
use crate::invalid::Invalid;

/// The file the resolve step writes npm's configuration to, in `{out}`.
pub const CONFIG_FILE: &str = ".cachectl-npm-config.json";
/// The file the resolve step writes Node's platform to, in `{out}`.
pub const PLATFORM_FILE: &str = ".cachectl-node-platform.json";

/// What Node says of the image: its platform, and the lock keys of the
/// image's npm (what it writes to the hidden lockfile: the names in its
/// arborist's `pkgMetaKeys` and `nodeMetaKeys`), `null` when npm is not
/// where its `npm` command says.
const PLATFORM_SCRIPT: &str = r#"const fs = require("fs"), path = require("path");
let lockKeys = null;
try {
  const bin = (process.env.PATH || "").split(":").map(d => path.join(d, "npm")).find(f => fs.existsSync(f));
  const root = path.resolve(fs.realpathSync(bin), "..", "..");
  const source = fs.readFileSync(path.join(root, "node_modules/@npmcli/arborist/lib/shrinkwrap.js"), "utf8");
  const list = name => {
    const found = source.match(new RegExp("const " + name + " = \\[([^\\]]*)\\]"));
    return found ? [...found[1].matchAll(/["']([^"']+)["']/g)].map(m => m[1].replace(/^_/, "")) : null;
  };
  const pkg = list("pkgMetaKeys"), node = list("nodeMetaKeys");
  if (pkg && node) lockKeys = pkg.concat(node);
} catch (e) {}
const h = process.report.getReport().header;
process.stdout.write(JSON.stringify({os: process.platform, cpu: process.arch,
  libc: h.glibcVersionRuntime ? "glibc" : "musl", node: process.version, lock_keys: lockKeys}));"#;

/// A native install step that package layers can take apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmInstall {
    /// The commands before `cd {out}/DIR` (copying the manifests there),
    /// as written; empty when there are none.
    pub prepare: String,
    /// The `npm ci` command as written.
    pub command: String,
    /// Its flags.
    pub flags: Vec<String>,
    /// The folder `npm ci` runs in, relative to the image root (`app`):
    /// `node_modules` is there.
    pub prefix: String,
}

impl NpmInstall {
    /// The npm install of `install` (a native step, `{out}` not yet
    /// replaced); `None` unless it ends `cd {out}/DIR && npm ci FLAGS`
    /// with nothing but `&&` between commands.
    pub fn recognise(install: &str) -> Option<Self> {
        let commands: Vec<&str> = install.split("&&").map(str::trim).collect();
        let [before @ .., cd, npm] = commands.as_slice() else {
            return None;
        };
        if [*cd, *npm]
            .iter()
            .any(|command| command.contains([';', '|', '>', '<', '`', '$', '\n', '&']))
        {
            return None;
        }
        let cd = shlex::split(cd)?;
        let [word, folder] = cd.as_slice() else {
            return None;
        };
        if word != "cd" {
            return None;
        }
        let prefix = folder.strip_prefix("{out}")?.trim_matches('/').to_owned();
        if prefix.is_empty() || prefix.split('/').any(|part| part == ".." || part == ".") {
            return None;
        }
        let words = shlex::split(npm)?;
        let [program, ci, flags @ ..] = words.as_slice() else {
            return None;
        };
        if program.rsplit('/').next() != Some("npm")
            || !matches!(ci.as_str(), "ci" | "clean-install")
        {
            return None;
        }
        if flags.iter().any(|flag| !flag.starts_with('-')) {
            return None;
        }
        Some(Self {
            prepare: before.join(" && "),
            command: (*npm).to_owned(),
            flags: flags.to_vec(),
            prefix,
        })
    }

    fn cd(&self) -> String {
        format!("cd {{out}}/{}", self.prefix)
    }

    /// The whole step, as the one-layer build runs it (`{out}` to be
    /// replaced).
    pub fn whole_step(&self) -> String {
        self.prepared(&self.command)
    }

    fn prepared(&self, then: &str) -> String {
        if self.prepare.is_empty() {
            format!("{} && {then}", self.cd())
        } else {
            format!("{} && {} && {then}", self.prepare, self.cd())
        }
    }

    /// The step that prepares the folder (`{out}/PREFIX` gets the
    /// manifests) and asks npm for its configuration with the step's
    /// flags and Node for its platform, into [`CONFIG_FILE`] and
    /// [`PLATFORM_FILE`] in `{out}`.
    pub fn resolve_command(&self) -> Result<String, Invalid> {
        let mut config = vec![
            "npm".to_owned(),
            "config".into(),
            "list".into(),
            "--json".into(),
        ];
        config.extend(self.flags.iter().cloned());
        let config = quote_all(&config)?;
        let platform = quote_all(&["node".into(), "-e".into(), PLATFORM_SCRIPT.into()])?;
        Ok(self.prepared(&format!(
            "{config} > {{out}}/{CONFIG_FILE} && {platform} > {{out}}/{PLATFORM_FILE}"
        )))
    }
}

fn quote_all(words: &[String]) -> Result<String, Invalid> {
    let quoted: Result<Vec<String>, Invalid> = words
        .iter()
        .map(|word| {
            shlex::try_quote(word)
                .map(|quoted| quoted.into_owned())
                .map_err(|_| Invalid(format!("{word:?} cannot be quoted for the shell")))
        })
        .collect();
    Ok(quoted?.join(" "))
}

/// What npm's configuration says, as far as the plan goes
/// (`npm config list --json` with the step's flags).
#[derive(Debug, Clone, Deserialize)]
pub struct NpmConfig {
    /// The default registry.
    #[serde(default = "default_registry")]
    pub registry: String,
    /// Which locked registry URLs are read from the configured registry:
    /// `npmjs` (the default), `always`, `never`, or a host.
    #[serde(default = "default_replace", rename = "replace-registry-host")]
    pub replace_registry_host: String,
    /// Dependency kinds left out.
    #[serde(default)]
    pub omit: Vec<String>,
    /// Dependency kinds put back.
    #[serde(default)]
    pub include: Vec<String>,
    /// `--production`.
    #[serde(default)]
    pub production: Option<bool>,
    /// `--only=prod`.
    #[serde(default)]
    pub only: Option<String>,
    /// `--ignore-scripts`.
    #[serde(default, rename = "ignore-scripts")]
    pub ignore_scripts: bool,
    /// `--no-bin-links` turns this off.
    #[serde(default = "yes", rename = "bin-links")]
    pub bin_links: bool,
    /// `hoisted` (the default) is the layout the lock describes.
    #[serde(default = "hoisted", rename = "install-strategy")]
    pub install_strategy: String,
    /// `@scope:registry` and the rest.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_registry() -> String {
    "https://registry.npmjs.org/".into()
}
fn default_replace() -> String {
    "npmjs".into()
}
fn yes() -> bool {
    true
}
fn hoisted() -> String {
    "hoisted".into()
}

impl NpmConfig {
    /// Reads `npm config list --json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        serde_json::from_slice(bytes).map_err(|e| Invalid(format!("npm's configuration: {e}")))
    }

    /// Whether dependencies of `kind` (`dev`, `optional`, `peer`) are
    /// left out.
    fn omits(&self, kind: &str) -> bool {
        let production = kind == "dev"
            && (self.production == Some(true)
                || matches!(self.only.as_deref(), Some("prod" | "production")));
        (production || self.omit.iter().any(|omitted| omitted == kind))
            && !self.include.iter().any(|included| included == kind)
    }

    /// The registry of `name` (`@scope/name` may have its own).
    fn registry_of(&self, name: &str) -> &str {
        name.strip_prefix('@')
            .and_then(|scoped| scoped.split_once('/'))
            .and_then(|(scope, _)| self.other.get(&format!("@{scope}:registry")))
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&self.registry)
    }

    /// The URL npm fetches `name`@`version` from, locked at `resolved`
    /// (or not: then the registry's own path).
    fn tarball(&self, name: &str, version: &str, resolved: Option<&str>) -> String {
        let registry = self.registry_of(name).trim_end_matches('/');
        let Some(resolved) = resolved else {
            let file = name.rsplit('/').next().unwrap_or(name);
            return format!("{registry}/{name}/-/{file}-{version}.tgz");
        };
        let Some((scheme, rest)) = resolved.split_once("://") else {
            return resolved.to_owned();
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let replace = match self.replace_registry_host.as_str() {
            "never" => false,
            "always" => true,
            "npmjs" => host == "registry.npmjs.org",
            other => host == other,
        };
        if replace && matches!(scheme, "http" | "https") {
            format!("{registry}/{path}")
        } else {
            resolved.to_owned()
        }
    }
}

/// The platform Node reports inside the image.
#[derive(Debug, Clone, Deserialize)]
pub struct NodePlatform {
    /// `linux`.
    pub os: String,
    /// `x64`, `arm64`.
    pub cpu: String,
    /// `glibc` or `musl`.
    pub libc: String,
    /// `v18.19.0`.
    pub node: String,
    /// The package keys the image's npm writes to its hidden lockfile
    /// (besides `name`, `resolved` and the dependency flags); `None` when
    /// it could not be read: the lock's entries are then written whole.
    #[serde(default)]
    pub lock_keys: Option<Vec<String>>,
}

impl NodePlatform {
    /// Reads what the resolve step wrote.
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        serde_json::from_slice(bytes).map_err(|e| Invalid(format!("Node's platform: {e}")))
    }

    /// Whether a package restricted to `os`, `cpu` and `libc` installs
    /// here, as npm checks it (`!name` excludes).
    fn accepts(&self, entry: &LockEntry) -> bool {
        let fits = |list: &Option<Vec<String>>, value: &str| match list {
            None => true,
            Some(list) if list.is_empty() => true,
            Some(list) => {
                if list
                    .iter()
                    .any(|item| item.strip_prefix('!') == Some(value))
                {
                    return false;
                }
                let allowed: Vec<&String> = list.iter().filter(|i| !i.starts_with('!')).collect();
                allowed.is_empty() || allowed.iter().any(|item| *item == value)
            }
        };
        fits(&entry.os, &self.os)
            && fits(&entry.cpu, &self.cpu)
            && (self.os != "linux" || fits(&entry.libc, &self.libc))
    }
}

/// One package entry of a lock.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    resolved: Option<String>,
    #[serde(default)]
    integrity: Option<String>,
    #[serde(default)]
    link: bool,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    dev_optional: bool,
    #[serde(default)]
    peer: bool,
    #[serde(default)]
    in_bundle: bool,
    #[serde(default)]
    has_install_script: bool,
    #[serde(default)]
    bin: Option<BTreeMap<String, String>>,
    #[serde(default)]
    os: Option<Vec<String>>,
    #[serde(default)]
    cpu: Option<Vec<String>>,
    #[serde(default)]
    libc: Option<Vec<String>>,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    peer_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    dev_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    workspaces: Option<serde_json::Value>,
}

/// The lock's top level, its `packages` kept as written and in order.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockFile<'a> {
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    version: Option<&'a RawValue>,
    lockfile_version: u32,
    #[serde(default)]
    requires: Option<bool>,
    #[serde(borrow)]
    packages: Ordered<'a>,
}

/// A JSON object's members in the order written.
struct Ordered<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Ordered<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Why a lock is installed as one layer, as before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// Lock version 1 lists no install paths.
    #[error(
        "package-lock.json version {0} lists no install paths (npm 7 or later writes version 2 or 3)"
    )]
    OldLock(u32),
    /// Workspaces and `file:` folders are links, not packages.
    #[error("{0} is a link (a workspace or a local folder)")]
    Link(String),
    /// The project's own install scripts may write anywhere.
    #[error("the project's own {0} script runs at install")]
    ProjectScript(String),
    /// Another layout than the lock's.
    #[error("install-strategy {0} is not the lock's layout")]
    Strategy(String),
}

/// One package of an npm plan, beyond what [`Package`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmPackage {
    /// Its path in the lock (`node_modules/send/node_modules/ms`),
    /// relative to the prefix.
    pub path: String,
    /// Its executables: name and path inside the package, normalised.
    pub bins: Vec<(String, String)>,
}

/// A lock read for one platform and configuration.
#[derive(Debug, Clone)]
pub struct NpmPlan {
    /// The packages, in the lock's order.
    pub plan: Plan,
    /// The npm side of each, by the same index.
    pub packages: Vec<NpmPackage>,
    /// The bin links of packages bundled inside another (their files come
    /// with it): the folder's path, name and target.
    pub bundled_bins: Vec<NpmPackage>,
    /// The hidden lockfile `npm ci` writes (`node_modules/.package-lock.json`).
    pub hidden_lock: String,
    /// Whether npm links executables into `.bin`.
    pub bin_links: bool,
    /// The folders `npm ci` leaves behind of the packages the
    /// configuration leaves out (`node_modules/@types` of an omitted
    /// `@types/node`), which may be empty.
    pub left_folders: Vec<String>,
}

/// The name a path installs (`node_modules/@s/x/node_modules/y` → `y`).
fn name_at(path: &str) -> &str {
    match path.rfind("node_modules/") {
        Some(at) => &path[at + "node_modules/".len()..],
        None => path,
    }
}

/// The folder of the package that `path` sits in (`""` for the root).
fn parent_of(path: &str) -> &str {
    match path.rfind("/node_modules/") {
        Some(at) => &path[..at],
        None => "",
    }
}

/// The path `name` resolves to from the package at `from`, as Node finds
/// it: its own `node_modules`, then each enclosing one.
fn resolve(present: &HashMap<&str, usize>, from: &str, name: &str) -> Option<usize> {
    let mut base = from;
    loop {
        let candidate = if base.is_empty() {
            format!("node_modules/{name}")
        } else {
            format!("{base}/node_modules/{name}")
        };
        if let Some(&at) = present.get(candidate.as_str()) {
            return Some(at);
        }
        if base.is_empty() {
            return None;
        }
        base = parent_of(base);
    }
}

/// What of the project's package.json decides whether its lock can be
/// taken apart.
#[derive(Debug, Default, Deserialize)]
struct Project {
    #[serde(default)]
    scripts: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    workspaces: Option<serde_json::Value>,
}

/// Reads `lock` (package-lock.json or npm-shrinkwrap.json) of the project
/// whose package.json is `package_json` as `npm ci` installs it with
/// `config` on `platform`.
pub fn read_lock(
    lock: &[u8],
    package_json: &[u8],
    config: &NpmConfig,
    platform: &NodePlatform,
) -> Result<Result<NpmPlan, Unsupported>, Invalid> {
    let project: Project =
        serde_json::from_slice(package_json).map_err(|e| Invalid(format!("package.json: {e}")))?;
    if project.workspaces.is_some() {
        return Ok(Err(Unsupported::Link("a workspace".into())));
    }
    if !config.ignore_scripts
        && let Some(script) = [
            "preinstall",
            "install",
            "postinstall",
            "preprepare",
            "prepare",
            "postprepare",
        ]
        .into_iter()
        .find(|script| project.scripts.contains_key(*script))
    {
        return Ok(Err(Unsupported::ProjectScript(script.into())));
    }
    let text =
        std::str::from_utf8(lock).map_err(|_| Invalid("package-lock.json is not UTF-8".into()))?;
    let file: LockFile<'_> =
        serde_json::from_str(text).map_err(|e| Invalid(format!("package-lock.json: {e}")))?;
    if file.lockfile_version < 2 {
        return Ok(Err(Unsupported::OldLock(file.lockfile_version)));
    }
    if config.install_strategy != "hoisted" {
        return Ok(Err(Unsupported::Strategy(config.install_strategy.clone())));
    }
    let mut entries: Vec<(String, LockEntry, &RawValue)> = Vec::new();
    // Packages the configuration leaves out (`--omit`): npm makes their
    // folders and removes them, leaving the folders they were in.
    let mut left_out: Vec<String> = Vec::new();
    for (path, raw) in &file.packages.0 {
        let entry: LockEntry = serde_json::from_str(raw.get())
            .map_err(|e| Invalid(format!("package-lock.json at {path:?}: {e}")))?;
        if path.is_empty() {
            if entry.workspaces.is_some() {
                return Ok(Err(Unsupported::Link("a workspace".into())));
            }
            continue;
        }
        if path
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty())
            || !path.starts_with("node_modules/")
        {
            return Ok(Err(Unsupported::Link(path.clone())));
        }
        if entry.link {
            return Ok(Err(Unsupported::Link(path.clone())));
        }
        let omitted = (entry.dev && config.omits("dev"))
            || (entry.optional && config.omits("optional"))
            || (entry.dev_optional && config.omits("dev") && config.omits("optional"))
            || (entry.peer && config.omits("peer"));
        if omitted {
            left_out.push(path.clone());
        } else if !entry.optional || platform.accepts(&entry) {
            entries.push((path.clone(), entry, raw));
        }
    }
    // An optional package no kept package needs any more (the dependency
    // of a package for another platform) is not installed either.
    let present: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(at, (path, ..))| (path.as_str(), at))
        .collect();
    let edges = |at: usize| -> Vec<usize> {
        let (path, entry, _) = &entries[at];
        entry
            .dependencies
            .keys()
            .chain(entry.optional_dependencies.keys())
            .chain(entry.peer_dependencies.keys())
            .filter_map(|name| resolve(&present, path, name))
            .collect()
    };
    let root: LockEntry = file
        .packages
        .0
        .iter()
        .find(|(path, _)| path.is_empty())
        .and_then(|(_, raw)| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let mut reached = vec![false; entries.len()];
    let mut pending: Vec<usize> = root
        .dependencies
        .keys()
        .chain(root.optional_dependencies.keys())
        .chain(root.peer_dependencies.keys())
        .chain(root.dev_dependencies.keys())
        .filter_map(|name| resolve(&present, "", name))
        .collect();
    while let Some(at) = pending.pop() {
        if std::mem::replace(&mut reached[at], true) {
            continue;
        }
        pending.extend(edges(at));
    }
    let kept: Vec<usize> = (0..entries.len())
        .filter(|&at| reached[at] || !(entries[at].1.optional || entries[at].1.dev_optional))
        .collect();

    // The hidden lockfile: what npm ci writes of the tree it installed.
    let indent = text
        .lines()
        .nth(1)
        .map(|line| &line[..line.len() - line.trim_start().len()])
        .unwrap_or("  ");
    let mut hidden = String::from("{\n");
    if let Some(name) = file.name {
        hidden.push_str(&format!("{indent}\"name\": {},\n", name.get()));
    }
    if let Some(version) = file.version {
        hidden.push_str(&format!("{indent}\"version\": {},\n", version.get()));
    }
    hidden.push_str(&format!("{indent}\"lockfileVersion\": 3,\n"));
    if file.requires.is_some() {
        hidden.push_str(&format!("{indent}\"requires\": true,\n"));
    }
    hidden.push_str(&format!("{indent}\"packages\": {{"));
    for (n, &at) in kept.iter().enumerate() {
        let (path, _, raw) = &entries[at];
        let comma = if n + 1 < kept.len() { "," } else { "" };
        let entry = match &platform.lock_keys {
            Some(keys) => hidden_entry(raw, keys, indent)?,
            None => raw.get().to_owned(),
        };
        hidden.push_str(&format!(
            "\n{indent}{indent}{}: {entry}{comma}",
            serde_json::Value::String(path.clone()),
        ));
    }
    if !kept.is_empty() {
        hidden.push_str(&format!("\n{indent}"));
    }
    hidden.push_str("}\n}\n");

    // The packages: every kept one but those bundled in another.
    let mut packages = Vec::new();
    let mut npm_packages = Vec::new();
    let mut bundled_bins = Vec::new();
    let mut index_of: HashMap<usize, usize> = HashMap::new();
    for &at in &kept {
        let (path, entry, _) = &entries[at];
        let bins: Vec<(String, String)> = entry
            .bin
            .iter()
            .flatten()
            .filter_map(|(name, target)| {
                let name = name.rsplit('/').next()?.to_owned();
                let target = normalise_path(target)?;
                (!name.is_empty() && !name.starts_with('.')).then_some((name, target))
            })
            .collect();
        let npm = NpmPackage {
            path: path.clone(),
            bins,
        };
        if entry.in_bundle {
            bundled_bins.push(npm);
            continue;
        }
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| name_at(path).to_owned());
        let version = entry.version.clone().unwrap_or_default();
        let url = config.tarball(&name, &version, entry.resolved.as_deref());
        let hash = entry.integrity.clone().map(ArtifactHash::Integrity);
        let scripted = entry.has_install_script && !config.ignore_scripts;
        index_of.insert(at, packages.len());
        packages.push(Package {
            name: path
                .strip_prefix("node_modules/")
                .unwrap_or(path)
                .to_owned(),
            version,
            artifact: Artifact { url, hash },
            direct: false,
            requested: parent_of(path).is_empty(),
            tie: if scripted {
                Tie::Image
            } else {
                Tie::Interpreter
            },
            needs: Vec::new(),
        });
        npm_packages.push(npm);
    }
    // An install script sees every package it needs, transitively.
    for (&at, &index) in &index_of {
        if packages[index].tie != Tie::Image {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut pending = edges(at);
        while let Some(next) = pending.pop() {
            if next == at || !seen.insert(next) {
                continue;
            }
            pending.extend(edges(next));
        }
        packages[index].needs = seen
            .iter()
            .filter_map(|n| index_of.get(n).copied())
            .collect();
    }
    let mut left_folders: BTreeSet<String> = BTreeSet::new();
    for path in &left_out {
        let mut folder = path.as_str();
        while let Some((parent, _)) = folder.rsplit_once('/') {
            folder = parent;
            let inside_left_out = left_out
                .iter()
                .any(|other| folder == other || folder.starts_with(&format!("{other}/")));
            if !inside_left_out {
                left_folders.insert(folder.to_owned());
            }
        }
    }
    Ok(Ok(NpmPlan {
        plan: Plan {
            packages,
            interpreter: Interpreter {
                implementation: "npm".into(),
                version: String::new(),
                machine: platform.cpu.clone(),
                platform: platform.os.clone(),
            },
        },
        packages: npm_packages,
        bundled_bins,
        hidden_lock: hidden,
        bin_links: config.bin_links,
        left_folders: left_folders.into_iter().collect(),
    }))
}

/// Keys npm writes for every package whatever its version knows of
/// package metadata.
const ALWAYS_WRITTEN: &[&str] = &[
    "name",
    "resolved",
    "link",
    "extraneous",
    "peer",
    "dev",
    "optional",
    "devOptional",
];

/// A lock entry as the image's npm writes it to the hidden lockfile: the
/// members it knows (`keys`), in the lock's order (npm orders both
/// alike), each value as written.
fn hidden_entry(raw: &RawValue, keys: &[String], indent: &str) -> Result<String, Invalid> {
    let members: Ordered<'_> = serde_json::from_str(raw.get())
        .map_err(|e| Invalid(format!("package-lock.json entry: {e}")))?;
    let kept: Vec<String> = members
        .0
        .iter()
        .filter(|(key, _)| {
            ALWAYS_WRITTEN.contains(&key.as_str()) || keys.iter().any(|known| known == key)
        })
        .map(|(key, value)| {
            format!(
                "{indent}{indent}{indent}{}: {}",
                serde_json::Value::String(key.clone()),
                value.get()
            )
        })
        .collect();
    if kept.is_empty() {
        return Ok("{}".into());
    }
    Ok(format!("{{\n{}\n{indent}{indent}}}", kept.join(",\n")))
}

/// `path` without `./` and empty parts; `None` when it leaves the package.
pub fn normalise_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl NpmPlan {
    /// The `.bin` links npm makes: each link's path (relative to the
    /// prefix) and target, in path order; a name two packages of one
    /// folder claim goes to the later one.
    pub fn bin_links(&self) -> BTreeMap<String, String> {
        let mut links = BTreeMap::new();
        if !self.bin_links {
            return links;
        }
        for package in self.packages.iter().chain(&self.bundled_bins) {
            let folder = match package.path.rfind("node_modules/") {
                Some(at) => &package.path[..at + "node_modules".len()],
                None => continue,
            };
            let name = name_at(&package.path);
            for (bin, target) in &package.bins {
                links.insert(
                    format!("{folder}/.bin/{bin}"),
                    format!("../{name}/{target}"),
                );
            }
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> NpmConfig {
        NpmConfig::parse(json.as_bytes()).unwrap()
    }

    fn linux() -> NodePlatform {
        NodePlatform {
            os: "linux".into(),
            cpu: "x64".into(),
            libc: "glibc".into(),
            node: "v18.19.0".into(),
            lock_keys: None,
        }
    }

    #[test]
    fn the_steps_init_writes_are_recognised() {
        let npm = NpmInstall::recognise(
            "mkdir -p {out}/app && cp package.json package-lock.json {out}/app/ && cd {out}/app && npm ci --omit=dev --no-audit --no-fund",
        )
        .unwrap();
        assert_eq!(npm.prefix, "app");
        assert_eq!(
            npm.prepare,
            "mkdir -p {out}/app && cp package.json package-lock.json {out}/app/"
        );
        assert_eq!(npm.flags, ["--omit=dev", "--no-audit", "--no-fund"]);
        assert_eq!(
            npm.whole_step(),
            "mkdir -p {out}/app && cp package.json package-lock.json {out}/app/ && cd {out}/app && npm ci --omit=dev --no-audit --no-fund"
        );
        for other in [
            "cd {out}/app && npm ci && rm -rf vendor",
            "cd {out}/app && npm install",
            "cd {out}/../x && npm ci",
            "cd /app && npm ci",
            "cd {out}/app && npm ci express",
            "cd {out}/app && npm ci > log",
            "npm ci",
        ] {
            assert_eq!(NpmInstall::recognise(other), None, "{other}");
        }
    }

    const LOCK: &str = r#"{
  "name": "demo",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "demo",
      "dependencies": {"send": "1", "tool": "1", "@esb/core": "1"},
      "devDependencies": {"is-number": "7"}
    },
    "node_modules/@esb/core": {
      "version": "1.0.0",
      "resolved": "https://registry.npmjs.org/@esb/core/-/core-1.0.0.tgz",
      "integrity": "sha512-core",
      "hasInstallScript": true,
      "bin": {"esb": "./bin/esb"},
      "optionalDependencies": {"@esb/linux-x64": "1", "@esb/darwin-arm64": "1"}
    },
    "node_modules/@esb/darwin-arm64": {
      "version": "1.0.0",
      "integrity": "sha512-darwin",
      "optional": true,
      "os": ["darwin"],
      "cpu": ["arm64"],
      "dependencies": {"only-darwin": "1"}
    },
    "node_modules/@esb/linux-x64": {
      "version": "1.0.0",
      "integrity": "sha512-linux",
      "optional": true,
      "os": ["linux"],
      "cpu": ["x64"]
    },
    "node_modules/is-number": {
      "version": "7.0.0",
      "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
      "integrity": "sha512-isnumber",
      "dev": true
    },
    "node_modules/ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha512-ms213"
    },
    "node_modules/only-darwin": {
      "version": "1.0.0",
      "integrity": "sha512-od",
      "optional": true
    },
    "node_modules/send": {
      "version": "0.19.0",
      "resolved": "https://registry.npmjs.org/send/-/send-0.19.0.tgz",
      "integrity": "sha512-send",
      "dependencies": {"ms": "2.0.0", "mime": "1"}
    },
    "node_modules/send/node_modules/ms": {
      "version": "2.0.0",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.0.0.tgz",
      "integrity": "sha512-ms200"
    },
    "node_modules/mime": {
      "version": "1.6.0",
      "resolved": "https://registry.npmjs.org/mime/-/mime-1.6.0.tgz",
      "integrity": "sha512-mime",
      "bin": {"mime": "cli.js"}
    },
    "node_modules/tool": {
      "version": "1.0.0",
      "resolved": "https://registry.npmjs.org/tool/-/tool-1.0.0.tgz",
      "integrity": "sha512-tool",
      "dependencies": {"send": "1"}
    }
  }
}
"#;

    #[test]
    fn a_lock_becomes_what_npm_ci_installs_on_the_platform() {
        let omit_dev = config(r#"{"registry": "http://127.0.0.1:9/", "omit": ["dev"]}"#);
        let plan = read_lock(LOCK.as_bytes(), b"{}", &omit_dev, &linux())
            .unwrap()
            .unwrap();
        let names: Vec<&str> = plan.plan.packages.iter().map(|p| p.name.as_str()).collect();
        // No dev package, no other platform's, nor what only it needs.
        assert_eq!(
            names,
            [
                "@esb/core",
                "@esb/linux-x64",
                "ms",
                "send",
                "send/node_modules/ms",
                "mime",
                "tool"
            ]
        );
        let core = &plan.plan.packages[0];
        assert_eq!(core.tie, Tie::Image);
        assert_eq!(core.needs, [1]);
        assert_eq!(plan.plan.packages[3].tie, Tie::Interpreter);
        // A lock written against registry.npmjs.org installs from the
        // configured registry; one without `resolved` from its path.
        assert_eq!(
            plan.plan.packages[2].artifact.url,
            "http://127.0.0.1:9/ms/-/ms-2.1.3.tgz"
        );
        assert_eq!(
            plan.plan.packages[1].artifact.url,
            "http://127.0.0.1:9/@esb/linux-x64/-/linux-x64-1.0.0.tgz"
        );
        assert_eq!(
            plan.bin_links().into_iter().collect::<Vec<_>>(),
            [
                (
                    "node_modules/.bin/esb".to_owned(),
                    "../@esb/core/bin/esb".to_owned()
                ),
                (
                    "node_modules/.bin/mime".to_owned(),
                    "../mime/cli.js".to_owned()
                ),
            ]
        );
        // The hidden lockfile holds the installed entries as written.
        let hidden: serde_json::Value = serde_json::from_str(&plan.hidden_lock).unwrap();
        let full: serde_json::Value = serde_json::from_str(LOCK).unwrap();
        let installed = hidden["packages"].as_object().unwrap();
        assert_eq!(installed.len(), 7);
        // is-number was left out by --omit=dev: npm leaves node_modules.
        assert_eq!(plan.left_folders, ["node_modules"]);
        assert_eq!(
            installed["node_modules/send"],
            full["packages"]["node_modules/send"]
        );
        assert!(plan.hidden_lock.starts_with("{\n  \"name\": \"demo\",\n  \"version\": \"1.0.0\",\n  \"lockfileVersion\": 3,\n  \"requires\": true,\n  \"packages\": {\n    \"node_modules/@esb/core\": {\n      \"version\": \"1.0.0\","));

        // Written by an npm that knows fewer keys than the lock holds.
        let older = NodePlatform {
            lock_keys: Some(vec![
                "version".into(),
                "integrity".into(),
                "dependencies".into(),
            ]),
            ..linux()
        };
        let plan = read_lock(LOCK.as_bytes(), b"{}", &omit_dev, &older)
            .unwrap()
            .unwrap();
        let hidden: serde_json::Value = serde_json::from_str(&plan.hidden_lock).unwrap();
        assert_eq!(
            hidden["packages"]["node_modules/@esb/linux-x64"],
            serde_json::json!({"version": "1.0.0", "integrity": "sha512-linux", "optional": true})
        );
        assert!(plan.hidden_lock.contains(
            "    \"node_modules/send\": {\n      \"version\": \"0.19.0\",\n      \"resolved\": \"https://registry.npmjs.org/send/-/send-0.19.0.tgz\",\n      \"integrity\": \"sha512-send\",\n      \"dependencies\": {\"ms\": \"2.0.0\", \"mime\": \"1\"}\n    },"
        ), "{}", plan.hidden_lock);

        let with_dev = config(r#"{}"#);
        let plan = read_lock(LOCK.as_bytes(), b"{}", &with_dev, &linux())
            .unwrap()
            .unwrap();
        assert!(plan.plan.packages.iter().any(|p| p.name == "is-number"));
        let production = config(r#"{"production": true, "ignore-scripts": true}"#);
        let plan = read_lock(LOCK.as_bytes(), b"{}", &production, &linux())
            .unwrap()
            .unwrap();
        assert!(!plan.plan.packages.iter().any(|p| p.name == "is-number"));
        assert_eq!(plan.plan.packages[0].tie, Tie::Interpreter);
    }

    #[test]
    fn what_the_lock_cannot_say_stays_one_layer() {
        let plain = config("{}");
        let scripted =
            br#"{"name": "demo", "scripts": {"postinstall": "node setup.js", "start": "node ."}}"#;
        assert_eq!(
            read_lock(LOCK.as_bytes(), scripted, &plain, &linux())
                .unwrap()
                .unwrap_err(),
            Unsupported::ProjectScript("postinstall".into())
        );
        let ignored = config(r#"{"ignore-scripts": true}"#);
        assert!(
            read_lock(LOCK.as_bytes(), scripted, &ignored, &linux())
                .unwrap()
                .is_ok()
        );
        let workspaces = br#"{"workspaces": ["packages/*"]}"#;
        assert!(
            read_lock(LOCK.as_bytes(), workspaces, &plain, &linux())
                .unwrap()
                .is_err()
        );
        let old = r#"{"name": "x", "lockfileVersion": 1, "packages": {}}"#;
        assert_eq!(
            read_lock(old.as_bytes(), b"{}", &plain, &linux())
                .unwrap()
                .unwrap_err(),
            Unsupported::OldLock(1)
        );
        let linked = r#"{"lockfileVersion": 3, "packages": {"node_modules/a": {"resolved": "packages/a", "link": true}}}"#;
        assert!(
            read_lock(linked.as_bytes(), b"{}", &plain, &linux())
                .unwrap()
                .is_err()
        );
        let escaping =
            r#"{"lockfileVersion": 3, "packages": {"node_modules/../../etc": {"version": "1"}}}"#;
        assert!(
            read_lock(escaping.as_bytes(), b"{}", &plain, &linux())
                .unwrap()
                .is_err()
        );
        assert!(read_lock(b"not json", b"{}", &plain, &linux()).is_err());
    }
}
