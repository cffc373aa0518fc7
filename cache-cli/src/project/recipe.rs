//! The base `cachectl init` proposes for an ecosystem: the image to start
//! from, the install step (run inside that image by the native builder),
//! the app settings, and the `Dockerfile.base` for docker, buildah and
//! podman.

use std::path::Path;

use super::{Ecosystem, Found};

/// What a base and its app need, for one ecosystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The image the base starts from.
    pub from: String,
    /// The native install step; `{out}` is the folder that becomes the layer.
    pub install: String,
    /// Whether the layer is everything the step changed in the image
    /// (`capture = "changes"`) rather than what it wrote under `{out}`.
    pub capture_changes: bool,
    /// The folder packed as the app layer.
    pub app_context: String,
    /// The app's command, when the project shows it.
    pub app_cmd: Option<Vec<String>>,
    /// The app's environment.
    pub app_env: Vec<(String, String)>,
    /// The app's working directory.
    pub app_workdir: Option<String>,
    /// What the app layer leaves out (the base holds it).
    pub app_exclude: Vec<String>,
    /// Comment lines written above `[base]`: what this base is, and what
    /// to do in CI besides.
    pub notes: Vec<String>,
    /// `Dockerfile.base`, for the Dockerfile builders.
    pub dockerfile: String,
}

/// The version in a version file (`.python-version`, `.nvmrc`), cut to
/// `parts` numbers: `3.11.7` → `3.11`, `v20.11.0` → `20`.
fn version_file(root: &Path, names: &[&str], parts: usize) -> Option<String> {
    let text = names
        .iter()
        .find_map(|name| std::fs::read_to_string(root.join(name)).ok())?;
    let version = text.lines().next()?.trim().trim_start_matches('v');
    let numbers: Vec<&str> = version.split('.').take(parts).collect();
    let valid = !numbers.is_empty()
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    valid.then(|| numbers.join("."))
}

/// A Python app's environment: the dependencies in /opt/deps on the path,
/// and their console scripts (gunicorn, uwsgi) on `PATH` before the
/// image's own folders.
fn python_env() -> Vec<(String, String)> {
    vec![
        ("PYTHONPATH".into(), "/opt/deps".into()),
        (
            "PATH".into(),
            "/opt/deps/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
    ]
}

/// The first file of `names` that exists in `root`.
fn first_file<'a>(root: &Path, names: &[&'a str]) -> Option<&'a str> {
    names.iter().copied().find(|name| root.join(name).is_file())
}

/// The Python app's command: Django's `manage.py`, or a `main.py` or
/// `app.py`.
fn python_cmd(root: &Path) -> Option<Vec<String>> {
    if root.join("manage.py").is_file() {
        return Some(
            ["python3", "/app/manage.py", "runserver", "0.0.0.0:8000"]
                .map(String::from)
                .to_vec(),
        );
    }
    let main = first_file(root, &["main.py", "app.py", "server.py"])?;
    Some(vec!["python3".into(), format!("/app/{main}")])
}

/// The Node app's command: `main` of package.json, else an `index.js` or
/// `server.js`, else `npm start` when package.json has a start script.
fn node_cmd(root: &Path) -> Option<Vec<String>> {
    let package: serde_json::Value = std::fs::read_to_string(root.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())?;
    let main = package["main"]
        .as_str()
        .filter(|main| root.join(main).is_file())
        .map(|main| main.trim_start_matches("./").to_owned())
        .or_else(|| first_file(root, &["index.js", "server.js", "app.js"]).map(String::from));
    match main {
        Some(main) => Some(vec!["node".into(), format!("/app/{main}")]),
        None if package["scripts"]["start"].is_string() => Some(vec!["npm".into(), "start".into()]),
        None => None,
    }
}

/// The program name of a Go module (its path's last element) or a Cargo
/// package.
fn program_name(root: &Path, ecosystem: Ecosystem) -> Option<String> {
    let name = match ecosystem {
        Ecosystem::Go => {
            let text = std::fs::read_to_string(root.join("go.mod")).ok()?;
            let module = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("module "))?;
            module
                .trim()
                .trim_matches('"')
                .rsplit('/')
                .next()?
                .to_owned()
        }
        Ecosystem::Cargo => {
            let text = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
            let manifest: toml::Table = toml::from_str(&text).ok()?;
            manifest.get("package")?.get("name")?.as_str()?.to_owned()
        }
        _ => return None,
    };
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    safe.then_some(name)
}

/// A shell word: quoted when it has anything but safe characters.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The Dockerfile lines copying `files` into the working directory,
/// keeping their relative paths.
fn copy_lines(files: &[String]) -> String {
    files
        .iter()
        .map(|file| {
            let json = serde_json::to_string(&[file, file]).unwrap_or_default();
            format!("COPY {json}\n")
        })
        .collect()
}

/// The recipe for `found`, an ecosystem of the project in `root`.
pub fn recipe(root: &Path, found: &Found) -> Recipe {
    let files = &found.manifests;
    let copy_into_out = |dest: &str| {
        let words: Vec<String> = files.iter().map(|f| shell_quote(f)).collect();
        format!("mkdir -p {dest} && cp {} {dest}/", words.join(" "))
    };
    let python =
        version_file(root, &[".python-version", "runtime.txt"], 2).unwrap_or_else(|| "3.12".into());
    let node = version_file(root, &[".nvmrc", ".node-version"], 1).unwrap_or_else(|| "22".into());
    let python_from = format!("docker.io/library/python:{python}-slim");
    let node_from = format!("docker.io/library/node:{node}-slim");
    let pip_target =
        "pip install --no-cache-dir --no-deps --target {out}/opt/deps -r /tmp/requirements.txt";
    let python_app = |install: String, dockerfile_run: &str| Recipe {
        from: python_from.clone(),
        install,
        capture_changes: false,
        app_context: ".".into(),
        app_cmd: python_cmd(root),
        app_env: python_env(),
        app_workdir: Some("/app".into()),
        app_exclude: [
            ".venv",
            "venv",
            "__pycache__",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
            ".tox",
        ]
        .map(String::from)
        .to_vec(),
        notes: vec![
            "The dependencies go to /opt/deps (on PYTHONPATH), installed by the image's own pip,"
                .into(),
            "so compiled wheels and script shebangs match the image's Python.".into(),
        ],
        dockerfile: format!(
            "FROM {python_from}\nWORKDIR /deps\n{}RUN {dockerfile_run}\n",
            copy_lines(files)
        ),
    };
    let node_app = |install: &str, dockerfile_run: &str| Recipe {
        from: node_from.clone(),
        install: format!(
            "{} && cd {{out}}/app && {install}",
            copy_into_out("{out}/app")
        ),
        capture_changes: false,
        app_context: ".".into(),
        app_cmd: node_cmd(root),
        app_env: vec![("NODE_ENV".into(), "production".into())],
        app_workdir: Some("/app".into()),
        app_exclude: vec!["node_modules".into()],
        notes: vec![
            "node_modules is installed into /app by the image's own Node (native modules match),"
                .into(),
            "and the app layer leaves the project's node_modules out.".into(),
        ],
        dockerfile: format!(
            "FROM {node_from}\nWORKDIR /app\n{}RUN {dockerfile_run}\n",
            copy_lines(files)
        ),
    };
    let runtime = |from: &str, install: &str, dockerfile_run: &str, build: &str, cache: &str| {
        let name = program_name(root, found.ecosystem);
        let cmd = match found.ecosystem {
            Ecosystem::Maven | Ecosystem::Gradle => {
                vec!["java".into(), "-jar".into(), "/app/app.jar".into()]
            }
            _ => vec![format!("/app/{}", name.as_deref().unwrap_or("server"))],
        };
        let lock = files.join(", ");
        let build = build.replace("NAME", name.as_deref().unwrap_or("server"));
        Recipe {
            from: from.to_owned(),
            install: install.to_owned(),
            capture_changes: true,
            app_context: "dist".into(),
            app_cmd: Some(cmd),
            app_env: Vec::new(),
            app_workdir: Some("/app".into()),
            app_exclude: Vec::new(),
            notes: vec![
                format!(
                    "{} compiles the dependencies into the program: the base is the runtime it",
                    found.ecosystem.name()
                ),
                format!(
                    "runs on, rebuilt when {lock} changes (a new native dependency may need a system"
                ),
                "library: add it to install). In CI, build the program into dist/ first, keeping"
                    .into(),
                "the compiled dependencies between runs with the folder cache:".into(),
                format!("  {cache}"),
                format!("  {build}"),
            ],
            dockerfile: format!("FROM {from}\nRUN {dockerfile_run}\n"),
        }
    };
    let apt_certificates = "apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log";
    match found.ecosystem {
        Ecosystem::Pip => {
            let main = files.first().map(String::as_str).unwrap_or("requirements.txt");
            python_app(
                format!(
                    "pip install --no-cache-dir --target {{out}}/opt/deps -r {}",
                    shell_quote(main)
                ),
                &format!("pip install --no-cache-dir -r {}", shell_quote(main)),
            )
        }
        Ecosystem::Poetry => python_app(
            format!(
                "pip install --no-cache-dir poetry poetry-plugin-export && poetry export --only main --without-hashes -f requirements.txt -o /tmp/requirements.txt && {pip_target}"
            ),
            "pip install --no-cache-dir poetry && poetry config virtualenvs.create false && poetry install --only main --no-root --no-interaction",
        ),
        Ecosystem::Uv => python_app(
            format!(
                "pip install --no-cache-dir uv && uv export --frozen --no-dev --no-hashes --no-emit-project -o /tmp/requirements.txt && {pip_target}"
            ),
            "pip install --no-cache-dir uv && UV_PROJECT_ENVIRONMENT=/usr/local uv sync --frozen --no-dev --no-install-project",
        ),
        Ecosystem::Pipenv => python_app(
            format!(
                "pip install --no-cache-dir pipenv && pipenv requirements > /tmp/requirements.txt && {pip_target}"
            ),
            "pip install --no-cache-dir pipenv && pipenv install --system --deploy",
        ),
        Ecosystem::Npm => node_app(
            "npm ci --omit=dev --no-audit --no-fund",
            "npm ci --omit=dev --no-audit --no-fund",
        ),
        Ecosystem::Pnpm => node_app(
            "COREPACK_ENABLE_DOWNLOAD_PROMPT=0 corepack pnpm install --frozen-lockfile --prod",
            "corepack enable && pnpm install --frozen-lockfile --prod",
        ),
        Ecosystem::Yarn => node_app(
            "yarn install --frozen-lockfile --production --non-interactive",
            "yarn install --frozen-lockfile --production --non-interactive",
        ),
        Ecosystem::YarnBerry => node_app(
            "COREPACK_ENABLE_DOWNLOAD_PROMPT=0 corepack yarn install --immutable",
            "corepack enable && yarn install --immutable",
        ),
        Ecosystem::Bundler => Recipe {
            from: "docker.io/library/ruby:3.3-slim".into(),
            install: "BUNDLE_FROZEN=true BUNDLE_WITHOUT=development:test bundle install --jobs 4 && rm -rf /usr/local/bundle/cache".into(),
            capture_changes: true,
            app_context: ".".into(),
            app_cmd: None,
            app_env: vec![("BUNDLE_WITHOUT".into(), "development:test".into())],
            app_workdir: Some("/app".into()),
            app_exclude: vec!["vendor/bundle".into(), ".bundle".into()],
            notes: vec![
                "The gems go where the image's Ruby looks for them (/usr/local/bundle): the layer"
                    .into(),
                "is everything bundle install changed in the image.".into(),
            ],
            dockerfile: format!(
                "FROM docker.io/library/ruby:3.3-slim\nWORKDIR /app\n{}RUN bundle config set without 'development test' && bundle install\n",
                copy_lines(files)
            ),
        },
        Ecosystem::Go => runtime(
            "docker.io/library/debian:bookworm-slim",
            apt_certificates,
            apt_certificates,
            "CGO_ENABLED=0 go build -trimpath -o dist/ ./...",
            "cachectl cache restore --name go-modules --key-files go.sum --path \"$(go env GOMODCACHE)\"",
        ),
        Ecosystem::Cargo => runtime(
            "docker.io/library/debian:bookworm-slim",
            apt_certificates,
            apt_certificates,
            "cargo build --release --locked && cp target/release/NAME dist/",
            "cachectl cache restore --name cargo-target --key-files Cargo.lock --path target",
        ),
        Ecosystem::Maven => runtime(
            "docker.io/library/eclipse-temurin:21-jre",
            "mkdir -p {out}/app",
            "mkdir -p /app",
            "mvn -B package && cp target/*.jar dist/app.jar",
            "cachectl cache restore --name maven --key-files pom.xml --path ~/.m2/repository",
        ),
        Ecosystem::Gradle => runtime(
            "docker.io/library/eclipse-temurin:21-jre",
            "mkdir -p {out}/app",
            "mkdir -p /app",
            "gradle build && cp build/libs/*.jar dist/app.jar",
            "cachectl cache restore --name gradle --key-files build.gradle.kts --path ~/.gradle/caches",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::detect;

    #[test]
    fn versions_and_commands_come_from_the_project() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(".nvmrc"), "v20.11.0\n").unwrap();
        std::fs::write(
            root.path().join("package.json"),
            r#"{"main": "./src/server.js"}"#,
        )
        .unwrap();
        std::fs::create_dir(root.path().join("src")).unwrap();
        std::fs::write(root.path().join("src/server.js"), "").unwrap();
        std::fs::write(root.path().join("package-lock.json"), "{}").unwrap();
        let found = &detect(root.path())[0];
        let recipe = recipe(root.path(), found);
        assert_eq!(recipe.from, "docker.io/library/node:20-slim");
        assert_eq!(
            recipe.app_cmd,
            Some(vec!["node".to_owned(), "/app/src/server.js".to_owned()])
        );
        assert!(
            recipe
                .install
                .starts_with("mkdir -p {out}/app && cp package.json package-lock.json {out}/app/"),
            "{}",
            recipe.install
        );
        assert!(
            recipe
                .dockerfile
                .contains("COPY [\"package-lock.json\",\"package-lock.json\"]"),
            "{}",
            recipe.dockerfile
        );
    }

    #[test]
    fn a_compiled_program_runs_from_dist_on_a_runtime_base() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("go.mod"),
            "module example.com/acme/api\n\ngo 1.22\n",
        )
        .unwrap();
        std::fs::write(root.path().join("go.sum"), "").unwrap();
        let found = &detect(root.path())[0];
        let recipe = recipe(root.path(), found);
        assert_eq!(recipe.app_context, "dist");
        assert_eq!(recipe.app_cmd, Some(vec!["/app/api".to_owned()]));
        assert!(recipe.capture_changes);
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
