//! `cachectl init`: on projects laid out as users have them, the file it
//! writes makes `cachectl hash --explain` list exactly the project's
//! dependency files, and it never overwrites a configuration unasked.

use std::collections::BTreeSet;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::{RegistryServer, push_busybox, skopeo_inspect, unpack};

/// The `(kind, name)` of every input `hash --explain` lists, but the
/// platform's.
fn inputs(project: &Project) -> BTreeSet<(String, String)> {
    inputs_of(project, &[])
}

/// [`inputs`] with more arguments (`--only NAME`).
fn inputs_of(project: &Project, extra: &[&str]) -> BTreeSet<(String, String)> {
    let mut args = vec!["hash", "--explain", "--upstream", "pin", "--json"];
    args.extend_from_slice(extra);
    let run = project.cachectl(&args, &[]).success();
    run.json()["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|input| {
            (
                input["kind"].as_str().unwrap_or_default().to_owned(),
                input["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(kind, _)| kind != "platform")
        .collect()
}

fn manifests(names: &[&str]) -> BTreeSet<(String, String)> {
    names
        .iter()
        .map(|name| ("manifest".to_owned(), (*name).to_owned()))
        .collect()
}

fn recipe(names: &[&str]) -> BTreeSet<(String, String)> {
    names
        .iter()
        .map(|name| ("recipe".to_owned(), (*name).to_owned()))
        .collect()
}

/// The native recipe's inputs: the image, the step, where it runs (and
/// what it captures, for the compiled languages' runtime bases).
const NATIVE: &[&str] = &["from", "install", "install-in"];
/// A pip install into `{out}` (Python) or `npm ci` in `{out}` (a
/// package-lock.json project) becomes package layers: another image.
const PACKAGE_LAYERS: &[&str] = &["from", "install", "install-in", "package-layers"];

/// A project layout: the ecosystem `init` must name, the files, the
/// manifests and recipe inputs expected, and a word of the command.
type Case<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
    &'a [&'a str],
    &'a str,
);

#[test]
fn init_lists_the_lock_files_of_poetry_pnpm_pip_and_cargo_projects() {
    let cases: &[Case] = &[
        (
            "Poetry",
            &[
                ("pyproject.toml", "[tool.poetry]\nname = \"web\"\n"),
                ("poetry.lock", "# lock\n"),
                ("requirements-dev.txt", "pytest\n"),
                ("main.py", "print('hi')\n"),
            ],
            &["pyproject.toml", "poetry.lock"],
            PACKAGE_LAYERS,
            "python3",
        ),
        (
            "pnpm",
            &[
                ("package.json", r#"{"name": "web", "main": "server.js"}"#),
                ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
                (".npmrc", "registry=https://registry.npmjs.org/\n"),
                ("server.js", "require('http')\n"),
                ("package-lock.json", "{}"),
            ],
            &["package.json", "pnpm-lock.yaml", ".npmrc"],
            NATIVE,
            "/app/server.js",
        ),
        (
            "pip",
            &[
                (
                    "requirements/prod.txt",
                    "-r common.txt\n-c ../constraints.txt\ngunicorn\n",
                ),
                ("requirements/common.txt", "flask==3.0.3\n"),
                ("requirements/dev.txt", "-r prod.txt\npytest\n"),
                ("constraints.txt", "werkzeug<4\n"),
                ("manage.py", "\n"),
            ],
            &[
                "requirements/prod.txt",
                "requirements/common.txt",
                "constraints.txt",
            ],
            PACKAGE_LAYERS,
            "manage.py",
        ),
        (
            "Cargo",
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"api\"\nversion = \"0.1.0\"\n",
                ),
                ("Cargo.lock", "version = 4\n"),
            ],
            &["Cargo.lock"],
            &["from", "install", "install-in", "capture"],
            "/app/api",
        ),
    ];
    for (name, files, expected, recipe_inputs, in_cmd) in cases {
        let project = Project::new();
        for (path, text) in *files {
            project.write(path, text);
        }
        let run = project.cachectl(&["init"], &[]).success();
        assert!(
            run.stderr.contains(&format!("found {name}")),
            "{name}: {}",
            run.stderr
        );
        let mut want = manifests(expected);
        want.extend(recipe(recipe_inputs));
        assert_eq!(inputs(&project), want, "{name}");
        let written = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
        let cmd_line = written
            .lines()
            .find(|line| line.starts_with("cmd = "))
            .unwrap_or_else(|| panic!("{name}: no cmd in\n{written}"));
        assert!(cmd_line.contains(in_cmd), "{name}: {cmd_line}");
    }
}

#[test]
fn a_go_module_with_a_dockerfile_base_is_keyed_on_what_the_dockerfile_copies() {
    let project = Project::new();
    project.write("go.mod", "module example.com/acme/api\n\ngo 1.22\n");
    project.write("go.sum", "example.com/dep v1.0.0 h1:abc=\n");
    project.write("main.go", "package main\n");
    project.write(
        "Dockerfile.base",
        "FROM docker.io/library/golang:1.23 AS build\nWORKDIR /src\n\
         COPY go.mod go.sum ./\nRUN go mod download\n",
    );
    let run = project
        .cachectl(
            &[
                "init",
                "--builder",
                "buildah",
                "--image",
                "registry.example.com/acme/api-base",
                "--app-image",
                "registry.example.com/acme/api:main",
            ],
            &[],
        )
        .success();
    assert!(run.stderr.contains("found Go modules"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Dockerfile.base copies go.mod, go.sum"),
        "{}",
        run.stderr
    );
    let mut want = manifests(&["go.mod", "go.sum"]);
    want.extend(recipe(&["dockerfile:Dockerfile.base"]));
    assert_eq!(inputs(&project), want);
    let written = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    assert!(
        written.contains("image = \"registry.example.com/acme/api-base\"")
            && written.contains("image = \"registry.example.com/acme/api:main\""),
        "{written}"
    );
    // The user's Dockerfile is theirs: read, never rewritten.
    assert!(
        std::fs::read_to_string(project.path().join("Dockerfile.base"))
            .unwrap()
            .contains("go mod download")
    );
}

#[test]
fn init_writes_a_dockerfile_base_only_when_there_is_none_and_never_overwrites_unasked() {
    let project = Project::new();
    project.write("package.json", r#"{"scripts": {"start": "node ."}}"#);
    project.write("package-lock.json", "{}");
    let run = project
        .cachectl(&["init", "--builder", "buildah", "--json"], &[])
        .success();
    let report = run.json();
    assert_eq!(report["images"][0]["detected"][0]["ecosystem"], "npm");
    let dockerfile = std::fs::read_to_string(project.path().join("Dockerfile.base")).unwrap();
    assert!(
        dockerfile.contains("RUN npm ci --omit=dev") && dockerfile.contains("package-lock.json"),
        "{dockerfile}"
    );
    // The Dockerfile it wrote copies the lock files: the same inputs.
    let mut want = manifests(&["package.json", "package-lock.json"]);
    want.extend(recipe(&["dockerfile:Dockerfile.base"]));
    assert_eq!(inputs(&project), want);

    // Twice: refused, and the file is untouched.
    project.append("cachectl.toml", "# mine\n");
    let again = project.cachectl(&["init"], &[]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    let kept = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    assert!(kept.ends_with("# mine\n"));

    // --force writes a new one (native now); the Dockerfile stays.
    project.write("Dockerfile.base", "FROM scratch\n# mine\n");
    project.cachectl(&["init", "--force"], &[]).success();
    let replaced = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    assert!(!replaced.contains("# mine") && replaced.contains("builder = \"native\""));
    assert_eq!(
        std::fs::read_to_string(project.path().join("Dockerfile.base")).unwrap(),
        "FROM scratch\n# mine\n"
    );
    let mut want = manifests(&["package.json", "package-lock.json"]);
    want.extend(recipe(PACKAGE_LAYERS));
    assert_eq!(inputs(&project), want);
}

#[test]
fn init_in_a_folder_with_nothing_to_go_on_says_what_it_looked_for() {
    let project = Project::new();
    project.write("README", "hello\n");
    let run = project.cachectl(&["init"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("found no dependency manifest") && run.stderr.contains("--manifest"),
        "{}",
        run.stderr
    );
    assert!(!project.path().join("cachectl.toml").exists());
    // Named by hand, it writes them as given.
    project.write("deps.lock", "x\n");
    project
        .cachectl(
            &[
                "init",
                "--manifest",
                "deps.lock",
                "--install",
                "cp deps.lock {out}/",
            ],
            &[],
        )
        .success();
    let mut want = manifests(&["deps.lock"]);
    want.extend(recipe(&["from", "install"]));
    assert_eq!(inputs(&project), want);
}

#[test]
fn a_repository_with_an_api_and_a_front_end_folder_gets_one_image_section_each() {
    let project = Project::new();
    project.write("api/go.mod", "module example.com/acme/api\n\ngo 1.22\n");
    project.write("api/go.sum", "example.com/dep v1.0.0 h1:abc=\n");
    project.write("frontend/package.json", r#"{"main": "server.js"}"#);
    project.write("frontend/package-lock.json", "{}");
    project.write("frontend/server.js", "\n");
    project.write("docs/index.md", "# docs\n");
    project.write("node_modules/x/package.json", "{}");
    let run = project.cachectl(&["init", "--json"], &[]).success();
    let report = run.json();
    let names: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| image["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "frontend"]);
    assert!(
        run.stderr.contains("[frontend] found npm"),
        "{}",
        run.stderr
    );
    for (name, manifest, recipe_inputs) in [
        (
            "api",
            vec!["go.sum"],
            vec!["from", "install", "install-in", "capture"],
        ),
        (
            "frontend",
            vec!["package.json", "package-lock.json"],
            PACKAGE_LAYERS.to_vec(),
        ),
    ] {
        let listed = inputs_of(&project, &["--only", name]);
        let mut want = manifests(&manifest);
        want.extend(recipe(&recipe_inputs));
        assert_eq!(listed, want, "{name}");
    }
    // One image's flags cannot name all of them.
    let refused = project.cachectl(&["init", "--force", "--image", "reg/x"], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
}

/// A Wagtail site laid out as wagtail/bakerydemo is: requirements, a
/// Procfile, and a Dockerfile whose final stage says how the app runs.
const BAKERY_DOCKERFILE: &str = r#"ARG UV_VERSION=0.11.16
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:3.12-slim
COPY --from=uv /uv /uvx /bin/
ADD requirements/ /requirements/
ENV VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH PYTHONPATH=/code/
RUN uv venv ${VIRTUAL_ENV} && uv pip install --no-cache -r /requirements/production.txt
RUN mkdir /code/
WORKDIR /code/
ADD . /code/
ENV PORT=8000
EXPOSE 8000
ENV DJANGO_SETTINGS_MODULE=bakerydemo.settings.production DJANGO_DEBUG=off
ENTRYPOINT ["/code/docker-entrypoint.sh"]
CMD ["uwsgi", "/code/etc/uwsgi.ini"]
"#;

/// The `[app]` table of the project's cachectl.toml.
fn app_table(project: &Project) -> toml::Table {
    let text = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    file["app"].as_table().unwrap().clone()
}

fn strings(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn init_takes_how_the_app_runs_from_the_projects_dockerfile_then_its_procfile() {
    let project = Project::new();
    project.write("requirements.txt", "-r requirements/production.txt\n");
    project.write(
        "requirements/production.txt",
        "Django==5.2\nuwsgi==2.0.28\n",
    );
    project.write("manage.py", "\n");
    project.write(
        "Procfile",
        "release: python manage.py migrate\nweb: uwsgi ./etc/uwsgi.ini\n",
    );
    project.write("Dockerfile", BAKERY_DOCKERFILE);
    let run = project
        .cachectl(
            &["init"],
            &[("CACHECTL_CACHE", "http://cache.internal:8080")],
        )
        .success();
    assert!(
        run.stderr
            .contains("the app's command comes from Dockerfile line 16"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    // The cache the user gave is written, not a placeholder.
    assert!(
        text.contains("\ncache = \"http://cache.internal:8080\"\n"),
        "{text}"
    );
    let app = app_table(&project);
    assert_eq!(strings(&app["cmd"]), ["uwsgi", "/code/etc/uwsgi.ini"]);
    assert_eq!(strings(&app["entrypoint"]), ["/code/docker-entrypoint.sh"]);
    assert_eq!(app["dest"].as_str(), Some("/code"));
    assert_eq!(app["workdir"].as_str(), Some("/code"));
    assert_eq!(strings(&app["expose"]), ["8000"]);
    let env = app["env"].as_table().unwrap();
    assert_eq!(
        env["DJANGO_SETTINGS_MODULE"].as_str(),
        Some("bakerydemo.settings.production")
    );
    assert_eq!(env["PORT"].as_str(), Some("8000"));
    // The Dockerfile's own install layout is not taken: the base has the
    // packages in /opt/deps, their scripts on PATH.
    assert_eq!(env["PYTHONPATH"].as_str(), Some("/opt/deps"));
    assert!(env["PATH"].as_str().unwrap().starts_with("/opt/deps/bin:"));
    assert!(!env.contains_key("VIRTUAL_ENV"));
    assert!(
        text.contains("# The command is Dockerfile line 16's."),
        "{text}"
    );
    assert!(text.contains("Not taken: VIRTUAL_ENV"), "{text}");

    // Without a Dockerfile the Procfile's web process is the command,
    // and the file is valid for every command that reads it.
    std::fs::remove_file(project.path().join("Dockerfile")).unwrap();
    project.cachectl(&["init", "--force"], &[]).success();
    let app = app_table(&project);
    assert_eq!(strings(&app["cmd"]), ["uwsgi", "./etc/uwsgi.ini"]);
    assert!(app.get("dest").is_none());
    let text = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    assert!(text.contains("# cache = "), "{text}");
    project
        .cachectl(&["hash", "--upstream", "pin"], &[])
        .success();

    // A Procfile reading $PORT gets one, and the port is exposed.
    project.write("Procfile", "web: gunicorn site.wsgi --bind 0.0.0.0:$PORT\n");
    project.cachectl(&["init", "--force"], &[]).success();
    let app = app_table(&project);
    assert_eq!(
        strings(&app["cmd"]),
        ["/bin/sh", "-c", "gunicorn site.wsgi --bind 0.0.0.0:$PORT"]
    );
    assert_eq!(app["env"]["PORT"].as_str(), Some("8000"));
    assert_eq!(strings(&app["expose"]), ["8000"]);
}

#[test]
fn a_node_dockerfiles_app_folder_becomes_app_beside_node_modules() {
    let project = Project::new();
    project.write(
        "package.json",
        r#"{"name": "web", "version": "1.0.0", "scripts": {"start": "node server.js"}}"#,
    );
    project.write(
        "package-lock.json",
        r#"{"name": "web", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": {"": {"name": "web", "version": "1.0.0"}}}"#,
    );
    project.write("server.js", "require('http')\n");
    project.write(
        "Dockerfile",
        "FROM node:22-slim\nWORKDIR /usr/src/app\nCOPY . .\nUSER node\nEXPOSE 3000/tcp\nCMD [\"node\", \"/usr/src/app/server.js\"]\n",
    );
    project.cachectl(&["init"], &[]).success();
    let app = app_table(&project);
    assert_eq!(strings(&app["cmd"]), ["node", "/app/server.js"]);
    assert_eq!(app["workdir"].as_str(), Some("/app"));
    assert_eq!(app["user"].as_str(), Some("node"));
    assert_eq!(strings(&app["expose"]), ["3000/tcp"]);
    assert!(app.get("dest").is_none());
}

#[test]
fn an_initd_projects_app_layer_leaves_history_ci_and_local_images_out() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "library/busybox", "1");
    let project = Project::new();
    project.write("requirements.txt", "flask==3.0.3\n");
    project.write("main.py", "print('hi')\n");
    project.write(".github/workflows/ci.yml", "on: push\n");
    project.write(".gitlab-ci.yml", "build: {}\n");
    project.write(".vscode/settings.json", "{}\n");
    // The repository's history: two megabytes that must not ship.
    let noise: String = (0..200_000).map(|n| format!("{:x}", n % 16)).collect();
    project.write(".git/objects/pack/pack-1.pack", &noise.repeat(10));
    // An earlier image in the layout init names.
    project.write("build/oci/oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    project.write(
        "build/oci/index.json",
        r#"{"schemaVersion":2,"manifests":[]}"#,
    );
    project.write("build/oci/blobs/sha256/00", &noise);
    let init = project.cachectl(&["init"], &[]).success();
    // init says what the layer leaves out, largest first.
    assert!(
        init.stderr
            .contains("the app layer leaves out 2.2 MB (.git 2.0 MB, build/oci 200.1 kB, "),
        "{}",
        init.stderr
    );
    let report = project
        .cachectl(
            &["layer", "--base", &base, "--expose", "8000", "--json"],
            &[],
        )
        .success()
        .json();
    let bytes = report["layer_bytes"].as_u64().unwrap();
    assert!(bytes < 4096, "the app layer is {bytes} bytes");
    let scratch = tempfile::tempdir().unwrap();
    let layout = project.path().join("build/oci");
    let name = project_name(&project);
    let rootfs = unpack(&format!("oci:{}:{name}", layout.display()), scratch.path());
    let app = rootfs.join("rootfs/app");
    assert!(app.join("main.py").is_file());
    // (The test harness keeps cachectl's state in the project's .cachectl.)
    for left_out in [
        ".git",
        ".github",
        ".gitlab-ci.yml",
        ".vscode",
        "build/oci",
        ".cachectl",
    ] {
        assert!(!app.join(left_out).exists(), "{left_out} shipped");
    }
    let config = skopeo_inspect(&format!("oci:{}:{name}", layout.display()), true);
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8000/tcp": {}})
    );
    // A commit that changes only what is left out (the history, CI) is
    // the same app: nothing is packed or uploaded.
    project.write(".git/objects/pack/pack-2.pack", "more history\n");
    project.write(".github/workflows/ci.yml", "on: [push, pull_request]\n");
    let again = project
        .cachectl(
            &["layer", "--base", &base, "--expose", "8000", "--json"],
            &[],
        )
        .success()
        .json();
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    assert_eq!(again["digest"], report["digest"], "{again}");
    // Recognised from its record: the layout's folder was there when the
    // first deploy hashed the context.
    assert_eq!(again["reused"], true, "{again}");
    // Another port is another image, though the files are the same.
    let other_port = project
        .cachectl(
            &["layer", "--base", &base, "--expose", "9000", "--json"],
            &[],
        )
        .success()
        .json();
    assert_eq!(other_port["reused"], false, "{other_port}");
    let config = skopeo_inspect(&format!("oci:{}:{name}", layout.display()), true);
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"9000/tcp": {}})
    );
}

/// The image name `init` gives the project (its folder's name).
fn project_name(project: &Project) -> String {
    let text = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let image = file["app"]["image"].as_str().unwrap().to_owned();
    image.rsplit(':').next().unwrap().to_owned()
}
