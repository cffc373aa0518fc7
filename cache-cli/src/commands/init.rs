//! `cachectl init`: looks at the project, says what it found and why, and
//! writes a commented `cachectl.toml` (and a `Dockerfile.base` when the
//! chosen builder needs one and there is none). It never overwrites a
//! configuration without `--force`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{AppFlags, Cli, config};
use crate::exit::Failure;
use crate::project::declared::{Declared, declared};
use crate::project::recipe::{Recipe, recipe};
use crate::project::{Ecosystem, Found, detect};
use crate::report::bytes::human_bytes;
use crate::upstream::dockerfile;

/// The Dockerfile `init` writes for docker, buildah and podman.
const DOCKERFILE_BASE: &str = "Dockerfile.base";

/// What `init` did, for `--json`.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The configuration file written.
    pub config: PathBuf,
    /// The images configured: one, or one per folder of a project of
    /// several (`[images.NAME]`).
    pub images: Vec<ImageReport>,
}

/// One image `init` configured.
#[derive(Debug, Serialize)]
pub struct ImageReport {
    /// Its `[images.NAME]` name; `None` for a project of one image.
    pub name: Option<String>,
    /// Its folder, relative to the configuration's.
    pub dir: PathBuf,
    /// What was found there.
    pub detected: Vec<Detected>,
    /// The base's manifests, as written.
    pub manifests: Vec<String>,
    /// The Dockerfile written, if one was.
    pub dockerfile: Option<PathBuf>,
}

/// One ecosystem found.
#[derive(Debug, Serialize)]
pub struct Detected {
    /// Its name (`pip`, `npm`, `Cargo`, ...).
    pub ecosystem: String,
    /// Its files.
    pub manifests: Vec<String>,
    /// Why it was recognised.
    pub why: String,
}

/// Folders never taken for an image's (dependencies and build output).
const NOT_PROJECTS: &[&str] = &[
    "node_modules",
    "target",
    "vendor",
    "build",
    "dist",
    "venv",
    "__pycache__",
];

/// One image to configure: where, and what was found there.
struct Unit {
    name: Option<String>,
    dir: PathBuf,
    found: Vec<Found>,
}

/// The images of the project in `root`: the folder itself when anything
/// is found there (or manifests are named), else each subfolder where
/// something is.
fn units(root: &Path, named_manifests: bool) -> Vec<Unit> {
    let found = detect(root);
    if !found.is_empty() || named_manifests {
        return vec![Unit {
            name: None,
            dir: PathBuf::new(),
            found,
        }];
    }
    let mut folders: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.') && !NOT_PROJECTS.contains(&name.as_str()))
        .collect();
    folders.sort();
    folders
        .into_iter()
        .filter_map(|folder| {
            let found = detect(&root.join(&folder));
            (!found.is_empty()).then(|| Unit {
                name: Some(project_name(&root.join(&folder))),
                dir: PathBuf::from(folder),
                found,
            })
        })
        .collect()
}

/// Runs `init`.
pub async fn run(cli: &Cli, force: bool, app: &AppFlags) -> Result<(), Failure> {
    let path = cli.config.clone();
    let root = config::project_root(&path);
    if !root.is_dir() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} is not a folder: run cachectl init in the project's folder, or name the file with --config",
            root.display()
        )));
    }
    if path.exists() && !force {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} already exists; cachectl init leaves it alone (--force writes a new one over it)",
            path.display()
        )));
    }
    let units = units(&root, !cli.base.manifests.is_empty());
    if units.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "found no dependency manifest in {} or its folders (looked for requirements*.txt, \
             poetry.lock, uv.lock, Pipfile.lock, package-lock.json, pnpm-lock.yaml, yarn.lock, \
             Gemfile.lock, go.sum, Cargo.lock, pom.xml, build.gradle): name the files that decide \
             the base with --manifest, and its install step with --install",
            root.display()
        )));
    }
    let several = units.len() > 1 || units[0].name.is_some();
    if several && (cli.base.image.is_some() || app.image.is_some()) {
        return Err(Failure::usage(anyhow::anyhow!(
            "found {} images ({}): --image and --app-image would name all of them; \
             init without them, then set each [images.NAME] section's",
            units.len(),
            units
                .iter()
                .filter_map(|unit| unit.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut text = header(&units, cli.cache.as_deref());
    let mut images = Vec::new();
    for unit in &units {
        let folder = root.join(&unit.dir);
        let place = unit
            .name
            .as_ref()
            .map(|name| format!("[{name}] "))
            .unwrap_or_default();
        for item in &unit.found {
            eprintln!(
                "{place}found {} ({}): its manifests are {}",
                item.ecosystem.name(),
                item.why,
                item.manifests.join(", ")
            );
        }
        for other in unit.found.iter().skip(1) {
            eprintln!(
                "{place}note: the base is for {}; {} ({}) is not in it: a second image is an \
                 [images.NAME] section (see docs/cachectl.md)",
                unit.found[0].ecosystem.name(),
                other.ecosystem.name(),
                other.manifests.join(", ")
            );
        }
        let plan = plan(cli, &folder, unit.found.first(), app)?;
        if let Some(recipe) = &plan.recipe {
            let excluded = AppPlan::of(&plan, recipe).exclude;
            let left_out = left_out_bytes(&folder.join(&recipe.app_context), &excluded);
            if !left_out.is_empty() {
                let total: u64 = left_out.iter().map(|(_, bytes)| bytes).sum();
                let each: Vec<String> = left_out
                    .iter()
                    .map(|(path, bytes)| format!("{path} {}", human_bytes(*bytes)))
                    .collect();
                eprintln!(
                    "{place}the app layer leaves out {} ({})",
                    human_bytes(total),
                    each.join(", ")
                );
            }
        }
        let dockerfile = write_dockerfile(&folder, &plan)?;
        match &unit.name {
            Some(name) => {
                let _ = writeln!(
                    text,
                    "\n[images.{name}]\n# Its folder: the paths below are relative to it.\ndir = {}",
                    quoted(&unit.dir.to_string_lossy())
                );
                render(&mut text, &plan, &format!("images.{name}."));
            }
            None => render(&mut text, &plan, ""),
        }
        images.push(ImageReport {
            name: unit.name.clone(),
            dir: unit.dir.clone(),
            detected: unit
                .found
                .iter()
                .map(|item| Detected {
                    ecosystem: item.ecosystem.name().to_owned(),
                    manifests: item.manifests.clone(),
                    why: item.why.clone(),
                })
                .collect(),
            manifests: plan.manifests.clone(),
            dockerfile,
        });
    }
    write_replacing(&path, &text)?;
    let next = if several {
        "`cachectl build` builds every image, `cachectl hash --explain --only NAME` lists one base's inputs"
    } else {
        "`cachectl hash --explain` lists the inputs of the base, `cachectl build` builds it and the app"
    };
    eprintln!("wrote {}; next: {next}", path.display());
    let report = InitReport {
        config: path.clone(),
        images,
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(Failure::failed)?
        );
    } else {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the Dockerfile `plan` names in `folder` when there is none yet;
/// its path if it did.
fn write_dockerfile(folder: &Path, plan: &Plan) -> Result<Option<PathBuf>, Failure> {
    let Some(dockerfile) = &plan.dockerfile else {
        return Ok(None);
    };
    let path = folder.join(dockerfile);
    if path.exists() {
        eprintln!("using the existing {}", path.display());
        return Ok(None);
    }
    let body = plan
        .recipe
        .as_ref()
        .map(|recipe| recipe.dockerfile.clone())
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{} does not exist and nothing was found to write it from",
                path.display()
            ))
        })?;
    write_new(
        &path,
        &format!("# Written by cachectl init: the base image.\n{body}"),
    )?;
    eprintln!("wrote {}", path.display());
    Ok(Some(path))
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML array of strings.
fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", items.join(", "))
}

/// A name for the images: the project folder's, lower case, with only the
/// characters a repository name may have.
fn project_name(root: &Path) -> String {
    let folder = std::fs::canonicalize(root)
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = folder
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() { "app".into() } else { name }
}

/// The settings `init` writes, from what was found and the flags given.
struct Plan {
    base_image: String,
    app_image: String,
    builder: String,
    dockerfile: Option<String>,
    manifests: Vec<String>,
    recipe: Option<Recipe>,
    install: Option<String>,
    from: Option<String>,
    platform: Option<String>,
    /// What the project already says about running its app.
    declared: Declared,
    /// The ecosystem of the base.
    ecosystem: Option<Ecosystem>,
}

/// Decides what to write: flags first, then what was found.
fn plan(cli: &Cli, root: &Path, primary: Option<&Found>, app: &AppFlags) -> Result<Plan, Failure> {
    let flags = &cli.base;
    let name = project_name(root);
    let builder = flags.builder.clone().unwrap_or_else(|| "native".into());
    if !["native", "docker", "buildah", "podman"].contains(&builder.as_str()) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--builder {builder:?}: expected native, docker, buildah or podman"
        )));
    }
    let recipe = primary.map(|found| recipe(root, found));
    let dockerfile = (builder != "native").then(|| {
        flags
            .dockerfile
            .clone()
            .unwrap_or_else(|| DOCKERFILE_BASE.into())
    });
    let mut manifests: Vec<String> = if !flags.manifests.is_empty() {
        flags.manifests.clone()
    } else {
        primary
            .map(|found| found.manifests.clone())
            .unwrap_or_default()
    };
    if let Some(dockerfile) = &dockerfile
        && flags.manifests.is_empty()
    {
        // An existing Dockerfile says what the base copies in: exactly
        // those files decide it.
        if let Ok(text) = std::fs::read_to_string(root.join(dockerfile)) {
            let copied: Vec<String> = dockerfile::context_sources(&text)
                .into_iter()
                .filter(|source| root.join(source).exists() || source.contains('*'))
                .collect();
            if !copied.is_empty() {
                eprintln!(
                    "{dockerfile} copies {}: those decide the base",
                    copied.join(", ")
                );
                manifests = copied;
            }
        }
        if !manifests.contains(dockerfile) {
            manifests.push(dockerfile.clone());
        }
    }
    let install = flags
        .install
        .clone()
        .or_else(|| recipe.as_ref().map(|r| r.install.clone()));
    if builder == "native" && install.is_none() {
        return Err(Failure::usage(anyhow::anyhow!(
            "the native builder needs an install step: give it with --install \
             (`{{out}}` is the folder that becomes the layer)"
        )));
    }
    let from = flags
        .from
        .clone()
        .or_else(|| recipe.as_ref().map(|r| r.from.clone()));
    let declared = declared(root);
    for (what, from) in [
        ("command", declared.cmd.as_ref().map(|d| &d.from)),
        ("entrypoint", declared.entrypoint.as_ref().map(|d| &d.from)),
        ("folder", declared.app_folder.as_ref().map(|d| &d.from)),
    ] {
        if let Some(from) = from {
            eprintln!("the app's {what} comes from {from}");
        }
    }
    Ok(Plan {
        base_image: flags
            .image
            .clone()
            .unwrap_or_else(|| format!("oci:./build/oci:{name}-base")),
        app_image: app
            .image
            .clone()
            .unwrap_or_else(|| format!("oci:./build/oci:{name}")),
        builder,
        dockerfile,
        manifests,
        recipe,
        install,
        from,
        platform: flags.platform.clone(),
        declared,
        ecosystem: primary.map(|found| found.ecosystem),
    })
}

/// The file's opening comments: what was found, and the cache server
/// (`cache`, when one was given with `--cache` or `CACHECTL_CACHE`).
fn header(units: &[Unit], cache: Option<&str>) -> String {
    let found: Vec<String> = units
        .iter()
        .flat_map(|unit| {
            unit.found.iter().map(move |item| {
                let place = if unit.dir.as_os_str().is_empty() {
                    String::new()
                } else {
                    format!("{}/: ", unit.dir.display())
                };
                format!("{place}{} ({})", item.ecosystem.name(), item.why)
            })
        })
        .collect();
    let found_line = if found.is_empty() {
        "nothing; the manifests were named on the command line".to_owned()
    } else {
        found.join("; ")
    };
    let cache_line = match cache {
        Some(url) => format!("cache = {}\n", quoted(url)),
        None => "# cache = \"http://cache.internal:8080\"\n".to_owned(),
    };
    format!(
        "# cachectl.toml, written by `cachectl init`. Found: {found_line}.\n\
         # Every field is also a flag and a CACHECTL_* variable (flag > variable > file):\n\
         # `cachectl --help`, and docs/cachectl.md in cachectl's repository.\n\n\
         # The cache server shared by the team and CI; without one, records are kept in\n\
         # ~/.cache/cachectl and the registry's tags are the cache.\n\
         {cache_line}"
    )
}

/// Appends the `[{prefix}base]` and `[{prefix}app]` sections of `plan`.
fn render(out: &mut String, plan: &Plan, prefix: &str) {
    let _ = writeln!(out, "\n[{prefix}base]");
    out.push_str(
        "# Where bases are pushed, tagged base-KEY: a registry repository for CI\n\
         # (e.g. \"ghcr.io/acme/web-base\"), or oci:DIR:NAME for a local OCI layout.\n",
    );
    let _ = writeln!(out, "image = {}", quoted(&plan.base_image));
    out.push_str(
        "# The files that decide the dependencies: a change to any of them makes a new base.\n",
    );
    let _ = writeln!(out, "manifests = {}", array(&plan.manifests));
    let _ = writeln!(out, "builder = {}", quoted(&plan.builder));
    if let Some(platform) = &plan.platform {
        let _ = writeln!(out, "platform = {}", quoted(platform));
    }
    match &plan.dockerfile {
        Some(dockerfile) => {
            let _ = writeln!(out, "dockerfile = {}", quoted(dockerfile));
        }
        None => {
            if let Some(recipe) = &plan.recipe {
                for note in &recipe.notes {
                    let _ = writeln!(out, "# {note}");
                }
            }
            match &plan.from {
                Some(from) => {
                    out.push_str(
                        "# The image the install step runs in (its tag is followed: a new image under it\n\
                         # makes a new base; `upstream = \"pin\"` stops that).\n",
                    );
                    let _ = writeln!(out, "from = {}", quoted(from));
                }
                None => out.push_str("# from = \"docker.io/library/debian:bookworm-slim\"\n"),
            }
            if let Some(install) = &plan.install {
                let _ = writeln!(out, "install = {}", quoted(install));
            }
            if plan.recipe.as_ref().is_some_and(|r| r.capture_changes) {
                out.push_str("# The layer is everything the step changed in the image.\n");
                let _ = writeln!(out, "capture = \"changes\"");
            }
        }
    }
    let _ = writeln!(
        out,
        "\n[{prefix}app]\n# The deployable image: the base plus the app folder as one layer."
    );
    let _ = writeln!(out, "image = {}", quoted(&plan.app_image));
    let Some(recipe) = &plan.recipe else {
        out.push_str("# cmd = [\"...\"]\n");
        return;
    };
    let app = AppPlan::of(plan, recipe);
    let _ = writeln!(out, "context = {}", quoted(&recipe.app_context));
    if !app.exclude.is_empty() {
        out.push_str(
            "# Left out of the layer (besides .dockerignore): history, CI and editor folders,\n\
             # what the base holds, and the local images.\n",
        );
        let _ = writeln!(out, "exclude = {}", array(&app.exclude));
    }
    for note in &app.notes {
        let _ = writeln!(out, "# {note}");
    }
    if let Some(dest) = &app.dest {
        let _ = writeln!(out, "dest = {}", quoted(dest));
    }
    if let Some(workdir) = &app.workdir {
        let _ = writeln!(out, "workdir = {}", quoted(workdir));
    }
    if let Some(entrypoint) = &app.entrypoint {
        let _ = writeln!(out, "entrypoint = {}", array(entrypoint));
    }
    match &app.cmd {
        Some(cmd) => {
            let _ = writeln!(out, "cmd = {}", array(cmd));
        }
        None => out.push_str("# cmd = [\"...\"]\n"),
    }
    if let Some(user) = &app.user {
        let _ = writeln!(out, "user = {}", quoted(user));
    }
    if !app.expose.is_empty() {
        let _ = writeln!(out, "expose = {}", array(&app.expose));
    }
    if !app.env.is_empty() {
        let pairs: Vec<String> = app
            .env
            .iter()
            .map(|(name, value)| format!("{} = {}", bare_key(name), quoted(value)))
            .collect();
        let _ = writeln!(out, "env = {{ {} }}", pairs.join(", "));
    }
}

/// The bytes under each of `excluded` (plain paths, not patterns) that
/// exist in `context`, largest first.
fn left_out_bytes(context: &Path, excluded: &[String]) -> Vec<(String, u64)> {
    fn size(path: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if !meta.is_dir() {
            return meta.len();
        }
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| size(&entry.path()))
            .sum()
    }
    let mut found: Vec<(String, u64)> = excluded
        .iter()
        .filter(|pattern| !pattern.contains(['*', '?', '[', '!']))
        .map(|path| (path.clone(), context.join(path)))
        .filter(|(_, path)| path.exists())
        .map(|(name, path)| (name, size(&path)))
        .filter(|(_, bytes)| *bytes > 0)
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    found
}

/// A TOML key: bare when it can be.
fn bare_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        quoted(name)
    }
}

/// Folders and files no app image needs: the repository's history, CI and
/// editor settings, and cachectl's own state when a CI job keeps it in the
/// project (`CACHECTL_CACHE_DIR=.cachectl`, to cache it between runs).
const NEVER_SHIPPED: &[&str] = &[
    ".cachectl",
    ".git",
    ".hg",
    ".svn",
    ".github",
    ".gitlab",
    ".gitlab-ci.yml",
    ".circleci",
    ".idea",
    ".vscode",
    ".DS_Store",
];

/// The `[app]` settings `init` writes: what the project declares first,
/// then the recipe's, with comments saying where each came from.
struct AppPlan {
    exclude: Vec<String>,
    dest: Option<String>,
    workdir: Option<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    user: Option<String>,
    expose: Vec<String>,
    env: Vec<(String, String)>,
    notes: Vec<String>,
}

impl AppPlan {
    fn of(plan: &Plan, recipe: &Recipe) -> Self {
        let declared = &plan.declared;
        let mut notes = Vec::new();
        let mut exclude: Vec<String> = NEVER_SHIPPED.iter().map(|s| (*s).to_owned()).collect();
        exclude.extend(recipe.app_exclude.iter().cloned());
        // The local OCI layouts init names are in the project folder.
        if [&plan.base_image, &plan.app_image]
            .iter()
            .any(|image| image.starts_with("oci:./build/oci"))
            && recipe.app_context == "."
        {
            exclude.push("build/oci".into());
        }
        exclude.dedup();
        // node_modules is in /app in the base: a Node app stays there.
        let node = matches!(
            plan.ecosystem,
            Some(Ecosystem::Npm | Ecosystem::Pnpm | Ecosystem::Yarn | Ecosystem::YarnBerry)
        );
        let mut dest = None;
        let mut moved_from = None;
        if let Some(folder) = &declared.app_folder
            && folder.value != "/app"
            && recipe.app_context == "."
        {
            if node {
                notes.push(format!(
                    "{} copies the app to {}; it goes to /app here, beside node_modules.",
                    folder.from, folder.value
                ));
                moved_from = Some(folder.value.clone());
            } else {
                notes.push(format!("The app folder is {}'s.", folder.from));
                dest = Some(folder.value.clone());
            }
        }
        let relocate = |words: &Vec<String>| -> Vec<String> {
            match &moved_from {
                Some(old) => words
                    .iter()
                    .map(|word| match word.strip_prefix(old.as_str()) {
                        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                            format!("/app{rest}")
                        }
                        _ => word.clone(),
                    })
                    .collect(),
                None => words.clone(),
            }
        };
        let workdir = match (&declared.workdir, &dest) {
            (Some(workdir), _) if !node => {
                notes.push(format!("The working directory is {}'s.", workdir.from));
                Some(workdir.value.clone())
            }
            (_, Some(dest)) => Some(dest.clone()),
            _ => recipe.app_workdir.clone(),
        };
        let entrypoint = declared.entrypoint.as_ref().map(|entrypoint| {
            notes.push(format!("The entrypoint is {}'s.", entrypoint.from));
            relocate(&entrypoint.value)
        });
        let cmd = match &declared.cmd {
            Some(cmd) => {
                notes.push(format!("The command is {}'s.", cmd.from));
                Some(relocate(&cmd.value))
            }
            None if entrypoint.is_some() => None,
            None => recipe.app_cmd.clone(),
        };
        let user = declared.user.as_ref().map(|user| {
            notes.push(format!("The user is {}'s.", user.from));
            user.value.clone()
        });
        let mut env = recipe.app_env.clone();
        for variable in &declared.env {
            let (name, value) = &variable.value;
            env.retain(|(old, _)| old != name);
            env.push((name.clone(), value.clone()));
        }
        if let Some(first) = declared.env.first() {
            notes.push(format!(
                "The environment adds {}'s ENV.",
                first.from.split(" line").next().unwrap_or("the Dockerfile")
            ));
        }
        if !declared.skipped_env.is_empty() {
            notes.push(format!("Not taken: {}.", declared.skipped_env.join(", ")));
        }
        let mut expose: Vec<String> = declared.expose.iter().map(|p| p.value.clone()).collect();
        // A Procfile's $PORT (Heroku sets it): the port the app listens on.
        let uses_port = cmd
            .iter()
            .chain(entrypoint.iter())
            .flatten()
            .any(|word| word.contains("$PORT") || word.contains("${PORT}"));
        if uses_port && !env.iter().any(|(name, _)| name == "PORT") {
            notes.push("The command reads $PORT: 8000 here.".into());
            env.push(("PORT".into(), "8000".into()));
            if expose.is_empty() {
                expose.push("8000".into());
            }
        }
        Self {
            exclude,
            dest,
            workdir,
            cmd,
            entrypoint,
            user,
            expose,
            env,
            notes,
        }
    }
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))
}

/// Writes `path` whole or not at all (a temporary file renamed over it).
fn write_replacing(path: &Path, text: &str) -> Result<(), Failure> {
    let folder = config::project_root(path);
    let failed = |e: std::io::Error| {
        Failure::failed(anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    let mut temporary = tempfile::NamedTempFile::new_in(&folder).map_err(failed)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes()).map_err(failed)?;
    // A configuration is not a secret: readable like the project's files.
    use std::os::unix::fs::PermissionsExt;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(failed)?;
    temporary.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}
