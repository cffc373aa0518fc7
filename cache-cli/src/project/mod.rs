//! What kind of project a folder is: the package managers whose lock files
//! it holds ([`detect`]), and for each, the base `cachectl init` proposes
//! ([`recipe`]).

pub mod declared;
pub mod python;
pub mod recipe;

use std::path::Path;

/// A package manager (or build tool) whose files decide a base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    /// pip and `requirements*.txt`.
    Pip,
    /// Poetry (`poetry.lock`).
    Poetry,
    /// uv (`uv.lock`).
    Uv,
    /// Pipenv (`Pipfile.lock`).
    Pipenv,
    /// npm (`package-lock.json`).
    Npm,
    /// pnpm (`pnpm-lock.yaml`).
    Pnpm,
    /// Yarn 1 (`yarn.lock`).
    Yarn,
    /// Yarn 2+ (`yarn.lock` with `.yarnrc.yml`).
    YarnBerry,
    /// Bundler (`Gemfile.lock`).
    Bundler,
    /// Go modules (`go.sum`).
    Go,
    /// Cargo (`Cargo.lock`).
    Cargo,
    /// Maven (`pom.xml`).
    Maven,
    /// Gradle (`build.gradle[.kts]`).
    Gradle,
}

impl Ecosystem {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pip => "pip",
            Self::Poetry => "Poetry",
            Self::Uv => "uv",
            Self::Pipenv => "Pipenv",
            Self::Npm => "npm",
            Self::Pnpm => "pnpm",
            Self::Yarn => "Yarn",
            Self::YarnBerry => "Yarn (Berry)",
            Self::Bundler => "Bundler",
            Self::Go => "Go modules",
            Self::Cargo => "Cargo",
            Self::Maven => "Maven",
            Self::Gradle => "Gradle",
        }
    }

    /// Whether the dependencies are compiled into the program (Go, Rust,
    /// the JVM): then the base is the runtime the program needs, and the
    /// dependencies' build output is a folder cache of the CI job.
    pub fn is_compiled(self) -> bool {
        matches!(self, Self::Go | Self::Cargo | Self::Maven | Self::Gradle)
    }
}

/// An ecosystem found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Which.
    pub ecosystem: Ecosystem,
    /// The files that decide its dependencies, relative to the folder
    /// (`/` separators): the base's manifests.
    pub manifests: Vec<String>,
    /// Why: the files seen, in words.
    pub why: String,
}

/// The ecosystems of the project in `root`, the one a base is most likely
/// about first: Python, then Node, Ruby, Go, Rust, the JVM. Within a
/// language, a lock file wins over a looser manifest (`poetry.lock` over
/// `requirements.txt`), and only the first found counts.
pub fn detect(root: &Path) -> Vec<Found> {
    let has = |name: &str| root.join(name).is_file();
    let present = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|name| has(name))
            .map(|name| (*name).to_owned())
            .collect()
    };
    let mut found = Vec::new();
    let mut add = |ecosystem, manifests: Vec<String>, why: String| {
        found.push(Found {
            ecosystem,
            manifests,
            why,
        })
    };

    // Python.
    if has("poetry.lock") && has("pyproject.toml") {
        add(
            Ecosystem::Poetry,
            present(&["pyproject.toml", "poetry.lock"]),
            "poetry.lock and pyproject.toml".into(),
        );
    } else if has("uv.lock") && has("pyproject.toml") {
        add(
            Ecosystem::Uv,
            present(&["pyproject.toml", "uv.lock"]),
            "uv.lock and pyproject.toml".into(),
        );
    } else if has("Pipfile.lock") {
        add(
            Ecosystem::Pipenv,
            present(&["Pipfile", "Pipfile.lock"]),
            "Pipfile.lock".into(),
        );
    } else if let Some(main) = main_requirements(root) {
        let files = python::requirement_files(root, &main);
        let why = match files.as_slice() {
            [only] => only.clone(),
            [first, rest @ ..] => format!("{first}, which includes {}", rest.join(", ")),
            [] => main.clone(),
        };
        add(Ecosystem::Pip, files, why);
    }

    // Node.
    let node_extras = |lock: &str, extras: &[&str]| {
        let mut files = present(&["package.json", lock]);
        files.extend(present(extras));
        files
    };
    if has("package.json") {
        if has("pnpm-lock.yaml") {
            add(
                Ecosystem::Pnpm,
                node_extras("pnpm-lock.yaml", &["pnpm-workspace.yaml", ".npmrc"]),
                "pnpm-lock.yaml and package.json".into(),
            );
        } else if has("yarn.lock") && has(".yarnrc.yml") {
            add(
                Ecosystem::YarnBerry,
                node_extras("yarn.lock", &[".yarnrc.yml"]),
                "yarn.lock and .yarnrc.yml (Yarn 2 or later)".into(),
            );
        } else if has("yarn.lock") {
            add(
                Ecosystem::Yarn,
                node_extras("yarn.lock", &[".npmrc", ".yarnrc"]),
                "yarn.lock (Yarn 1)".into(),
            );
        } else if has("package-lock.json") || has("npm-shrinkwrap.json") {
            let lock = if has("npm-shrinkwrap.json") {
                "npm-shrinkwrap.json"
            } else {
                "package-lock.json"
            };
            add(
                Ecosystem::Npm,
                node_extras(lock, &[".npmrc"]),
                format!("{lock} and package.json"),
            );
        }
    }

    // Ruby.
    if has("Gemfile.lock") {
        add(
            Ecosystem::Bundler,
            present(&["Gemfile", "Gemfile.lock"]),
            "Gemfile.lock".into(),
        );
    }

    // Compiled: the lock file only (a version bump in the package's own
    // manifest changes no dependency).
    if has("go.sum") {
        add(Ecosystem::Go, vec!["go.sum".into()], "go.sum".into());
    } else if has("go.mod") {
        add(
            Ecosystem::Go,
            vec!["go.mod".into()],
            "go.mod (no go.sum: no dependencies yet)".into(),
        );
    }
    if has("Cargo.lock") {
        add(
            Ecosystem::Cargo,
            vec!["Cargo.lock".into()],
            "Cargo.lock".into(),
        );
    }
    if has("pom.xml") {
        add(Ecosystem::Maven, vec!["pom.xml".into()], "pom.xml".into());
    } else {
        let gradle = present(&[
            "build.gradle",
            "build.gradle.kts",
            "settings.gradle",
            "settings.gradle.kts",
            "gradle.lockfile",
            "gradle/libs.versions.toml",
        ]);
        if gradle
            .iter()
            .any(|f| f.starts_with("build.gradle") || f.starts_with("settings.gradle"))
        {
            let why = gradle.join(", ");
            add(Ecosystem::Gradle, gradle, why);
        }
    }
    found
}

/// The requirements file an install names: `requirements.txt`, else the
/// production one of a `requirements/` folder, else the first
/// `requirements*.txt` that is not for development or tests.
fn main_requirements(root: &Path) -> Option<String> {
    let preferred = [
        "requirements.txt",
        "requirements/production.txt",
        "requirements/prod.txt",
        "requirements/base.txt",
        "requirements/main.txt",
        "requirements-prod.txt",
    ];
    if let Some(file) = preferred.iter().find(|f| root.join(f).is_file()) {
        return Some((*file).to_owned());
    }
    let mut candidates: Vec<String> = Vec::new();
    for folder in [".", "requirements"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let in_folder = folder == "requirements";
            let matches = name.ends_with(".txt") && (in_folder || name.starts_with("requirements"));
            let for_dev = ["dev", "test", "lint", "doc"]
                .iter()
                .any(|word| name.contains(word));
            if matches && !for_dev && entry.path().is_file() {
                candidates.push(if in_folder {
                    format!("requirements/{name}")
                } else {
                    name
                });
            }
        }
    }
    candidates.sort();
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    fn kinds(root: &tempfile::TempDir) -> Vec<(Ecosystem, Vec<String>)> {
        detect(root.path())
            .into_iter()
            .map(|found| (found.ecosystem, found.manifests))
            .collect()
    }

    #[test]
    fn a_lock_file_wins_over_a_looser_manifest_of_the_same_language() {
        let root = project(&[
            ("pyproject.toml", "[tool.poetry]\n"),
            ("poetry.lock", ""),
            ("requirements.txt", "flask\n"),
        ]);
        assert_eq!(
            kinds(&root),
            [(
                Ecosystem::Poetry,
                vec!["pyproject.toml".to_owned(), "poetry.lock".to_owned()]
            )]
        );
    }

    #[test]
    fn node_lock_files_and_their_settings_files() {
        let root = project(&[
            ("package.json", "{}"),
            ("pnpm-lock.yaml", ""),
            (".npmrc", ""),
        ]);
        assert_eq!(
            kinds(&root),
            [(
                Ecosystem::Pnpm,
                vec![
                    "package.json".to_owned(),
                    "pnpm-lock.yaml".to_owned(),
                    ".npmrc".to_owned()
                ]
            )]
        );
        let root = project(&[
            ("package.json", "{}"),
            ("yarn.lock", ""),
            (".yarnrc.yml", ""),
        ]);
        assert_eq!(kinds(&root)[0].0, Ecosystem::YarnBerry);
        // A lock file without package.json is not a project npm can install.
        let root = project(&[("package-lock.json", "{}")]);
        assert!(kinds(&root).is_empty());
    }

    #[test]
    fn the_production_requirements_are_chosen_not_the_development_ones() {
        let root = project(&[
            ("requirements/dev.txt", "-r prod.txt\npytest\n"),
            ("requirements/prod.txt", "-r common.txt\n"),
            ("requirements/common.txt", "flask\n"),
        ]);
        assert_eq!(
            kinds(&root),
            [(
                Ecosystem::Pip,
                vec![
                    "requirements/prod.txt".to_owned(),
                    "requirements/common.txt".to_owned()
                ]
            )]
        );
        let root = project(&[("requirements-test.txt", ""), ("requirements-web.txt", "")]);
        assert_eq!(kinds(&root)[0].1, ["requirements-web.txt"]);
    }

    #[test]
    fn several_languages_are_all_listed_python_first() {
        let root = project(&[
            ("Cargo.lock", ""),
            ("go.mod", "module x\n"),
            ("Gemfile.lock", ""),
            ("Gemfile", ""),
            ("requirements.txt", ""),
            ("build.gradle.kts", ""),
        ]);
        let found: Vec<Ecosystem> = kinds(&root).into_iter().map(|(e, _)| e).collect();
        assert_eq!(
            found,
            [
                Ecosystem::Pip,
                Ecosystem::Bundler,
                Ecosystem::Go,
                Ecosystem::Cargo,
                Ecosystem::Gradle
            ]
        );
    }
}
