//! Package layers against real components: eighteen real PyPI wheels (a
//! native Pillow, MarkupSafe and charset-normalizer, the `zope` namespace
//! shared by zope.interface and zope.event, Flask's console script,
//! setuptools' top-level `.pth`), installed by the Debian image's own pip
//! inside the image by the native builder, pushed to Debian's
//! docker-registry. The wheels come from `scripts/install-test-deps`
//! (`tests/wheels.txt`), installed with `--no-index`.
//!
//! And `npm ci` of `tests/npm/*` (express with a nested `ms`, semver's
//! executable, esbuild's install script and its Linux binary package, a
//! scoped dev dependency) by npm 10 in the Debian Node image, the tarballs
//! served by nginx as a registry (fetched once by `scripts/install-test-deps`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cachectl_e2e::bins::deps_dir;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::file_tree::{Tree, differences, tree};
use cachectl_e2e::nginx::Nginx;
use cachectl_e2e::process::run_tool;
use cachectl_e2e::python::{
    PYPI_REQUIREMENTS as REQUIREMENTS, push_node_npm_image, push_python_image, write_npm_plan,
    write_pypi_wheels,
};
use cachectl_e2e::registry::{RegistryServer, skopeo_inspect, unpack};
use cachectl_e2e::server::CacheServer;

/// A project of [`REQUIREMENTS`] whose native base starts from `from` and
/// goes to `image`, the wheels in its `wheels/` folder.
fn project(from: &str, image: &str) -> Project {
    project_with(from, image, None)
}

/// [`project`], keeping its records on the cache server at `cache`.
fn project_with(from: &str, image: &str, cache: Option<&str>) -> Project {
    let project = Project::new();
    write_pypi_wheels(project.path());
    project.write("requirements.txt", REQUIREMENTS);
    let cache = cache
        .map(|url| format!("cache = \"{url}\"\n"))
        .unwrap_or_default();
    project.write(
        "cachectl.toml",
        &format!(
            r#"{cache}[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "native"
from = "{from}"
install = "pip install --no-index --no-cache-dir --disable-pip-version-check --find-links wheels --target {{out}}/opt/deps -r requirements.txt"
platform = "linux/amd64"
"#
        ),
    );
    project
}

/// The layer digests of `reference`.
fn layers(reference: &str) -> Vec<String> {
    skopeo_inspect(&format!("docker://{reference}"), false)["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer.as_str().unwrap().to_owned())
        .collect()
}

/// Runs `args` in the image unpacked at `rootfs` (`chroot`, the packages
/// on `PYTHONPATH`); its trimmed stdout. Fails the test unless it succeeds.
fn run_in(rootfs: &Path, args: &[&str]) -> String {
    let run = Command::new("chroot")
        .arg(rootfs)
        .args(["/usr/bin/env", "PYTHONPATH=/opt/deps"])
        .args(args)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    String::from_utf8_lossy(&run.stdout).trim().to_owned()
}

/// The root filesystem of `reference`, unpacked under `scratch/name`.
fn unpacked(reference: &str, scratch: &Path, name: &str) -> std::path::PathBuf {
    let into = scratch.join(name);
    std::fs::create_dir_all(&into).unwrap();
    unpack(&format!("docker://{reference}"), &into).join("rootfs")
}

/// `ensure-base --json` with `args`; its report and how long it took.
fn ensure(project: &Project, args: &[&str]) -> (serde_json::Value, f64) {
    let started = Instant::now();
    let mut all = vec!["ensure-base", "--json"];
    all.extend_from_slice(args);
    let report = project.cachectl(&all, &[]).success().json();
    (report, started.elapsed().as_secs_f64())
}

#[test]
fn a_bump_rebuilds_one_package_layer_and_the_image_equals_the_one_layer_build() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let image = format!("{}/acme/web-base", registry.host());
    let project = project(&from, &image);

    // Cold: a layer per package on the image's, and the glue.
    let (cold, cold_seconds) = ensure(&project, &[]);
    assert_eq!(cold["source"], "built", "{cold}");
    let cold_ref = cold["reference"].as_str().unwrap().to_owned();
    let cold_layers = layers(&cold_ref);
    let from_layers = layers(&from).len();
    assert_eq!(cold_layers.len(), from_layers + 18 + 1, "{cold_layers:?}");
    // The report names every layer, its packages and its bytes.
    let reported = cold["package_layers"].as_array().unwrap();
    assert_eq!(reported.len(), 19);
    assert!(reported.iter().all(|layer| layer["source"] == "built"));
    assert_eq!(reported[18]["name"], "glue");
    assert!(
        reported
            .iter()
            .any(|layer| layer["packages"] == serde_json::json!(["six==1.16.0"])),
        "{reported:?}"
    );

    // It runs: every package imports (the native ones load), the console
    // script runs with the image's interpreter.
    let scratch = tempfile::tempdir().unwrap();
    let layered = unpacked(&cold_ref, scratch.path(), "layered");
    let imports = "import flask, werkzeug, jinja2, markupsafe, itsdangerous, click, blinker, \
         zope.interface, zope.event, setuptools, requests, urllib3, idna, certifi, \
         charset_normalizer, six, packaging; from PIL import Image; \
         Image.new('RGB', (2, 2)).save('/tmp/x.png'); \
         print(six.__version__, zope.interface.Interface.__name__, markupsafe.escape('<'))";
    assert_eq!(
        run_in(&layered, &["python3", "-c", imports]),
        "1.16.0 Interface &lt;"
    );
    let version = run_in(&layered, &["/opt/deps/bin/flask", "--version"]);
    assert!(version.contains("Flask 3.0.3"), "{version}");

    // A bump of one small package rebuilds its layer only.
    project.write(
        "requirements.txt",
        &REQUIREMENTS.replace("six==1.16.0", "six==1.17.0"),
    );
    let uploads = registry.blob_upload_requests();
    let (bumped, bump_seconds) = ensure(&project, &[]);
    assert_eq!(bumped["source"], "built");
    let bumped_ref = bumped["reference"].as_str().unwrap().to_owned();
    let bumped_layers = layers(&bumped_ref);
    let new: Vec<&String> = bumped_layers
        .iter()
        .filter(|layer| !cold_layers.contains(layer))
        .collect();
    assert_eq!(new.len(), 1, "only six's layer is new: {new:?}");
    // What changed in the plan, and the plan `hash --explain` shows.
    assert_eq!(
        bumped["plan_changes"],
        serde_json::json!(["six 1.16.0 -> 1.17.0"]),
        "{bumped}"
    );
    let explained = project
        .cachectl(&["hash", "--explain", "--json"], &[])
        .success()
        .json();
    let plan = explained["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 18, "{explained}");
    assert!(
        plan.contains(&serde_json::json!("six==1.17.0")),
        "{explained}"
    );
    let reported = bumped["package_layers"].as_array().unwrap();
    let built: Vec<&serde_json::Value> = reported
        .iter()
        .filter(|layer| layer["source"] == "built")
        .map(|layer| &layer["packages"])
        .collect();
    // six, and the glue (made each build; its bytes did not change).
    assert_eq!(
        built,
        [&serde_json::json!(["six==1.17.0"]), &serde_json::json!([])],
        "{reported:?}"
    );
    // Its layer and the config: nothing else is uploaded.
    assert!(
        registry.blob_upload_requests() - uploads <= 2,
        "{} blobs uploaded",
        registry.blob_upload_requests() - uploads
    );
    eprintln!(
        "package layers: cold {cold_seconds:.1} s, one-package bump {bump_seconds:.1} s ({:.0} %)",
        bump_seconds / cold_seconds * 100.0
    );

    // --force builds every layer again: the same digests.
    let (forced, _) = ensure(&project, &["--force"]);
    assert_eq!(forced["reference"], bumped["reference"], "{forced}");

    // The same plan as one layer (package layers off, by the flag): the
    // same files, bytes and modes under /opt/deps as the bumped image.
    let bumped_root = unpacked(&bumped_ref, scratch.path(), "bumped");
    let (one, _) = ensure(&project, &["--package-layers", "off"]);
    assert_ne!(
        one["key"], bumped["key"],
        "package layers are not in the key"
    );
    let one_ref = one["reference"].as_str().unwrap();
    assert_eq!(layers(one_ref).len(), from_layers + 1);
    let single = unpacked(one_ref, scratch.path(), "single");
    let (layered_tree, single_tree) = (
        tree(&bumped_root.join("opt/deps")),
        tree(&single.join("opt/deps")),
    );
    assert!(layered_tree.len() > 1000, "{}", layered_tree.len());
    // Every file the same, byte for byte, but bytecode: pip compiles in a
    // temporary folder whose random name is in each of its `.pyc` files (so
    // the one-layer build is not reproducible); package layers compile with
    // the final path. The same `.pyc` files exist in both.
    let differ: Vec<&String> = layered_tree
        .keys()
        .chain(single_tree.keys())
        .filter(|path| !path.ends_with(".pyc"))
        .filter(|path| layered_tree.get(*path) != single_tree.get(*path))
        .collect();
    assert!(differ.is_empty(), "files that differ: {differ:?}");
    let bytecode = |tree: &Tree| -> Vec<String> {
        tree.keys()
            .filter(|path| path.ends_with(".pyc"))
            .cloned()
            .collect()
    };
    assert_eq!(bytecode(&layered_tree), bytecode(&single_tree));
    let app_pyc = &layered_tree["flask/__pycache__/app.cpython-311.pyc"].2;
    assert!(
        String::from_utf8_lossy(app_pyc).contains("/opt/deps/flask/app.py"),
        "the bytecode names another path"
    );
}

/// The packages of `report`'s package layers that this run built (the
/// glue as `glue`).
fn built(report: &serde_json::Value) -> Vec<String> {
    report["package_layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|layer| layer["source"] == "built")
        .flat_map(
            |layer| match layer["packages"].as_array().unwrap().as_slice() {
                [] => vec![layer["name"].as_str().unwrap().to_owned()],
                packages => packages
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect(),
            },
        )
        .collect()
}

/// Pushes the Debian python image with one more file under the tag of
/// `reference`: the from image patched, as an upstream's rebuild is.
fn push_patched_python_image(reference: &str) {
    push_patched_image("python-image:python", reference);
}

/// Pushes `LAYOUT:NAME` of the test dependencies with one more file under
/// the tag of `reference`.
fn push_patched_image(layout_and_name: &str, reference: &str) {
    let (layout_name, name) = layout_and_name.split_once(':').unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run_tool(
        "cp",
        &[
            "-r",
            &deps_dir().join(layout_name).display().to_string(),
            &layout.display().to_string(),
        ],
        &[],
    );
    let patch = work.path().join("patch.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&patch).unwrap());
    let body = b"patched\n";
    let mut header = tar::Header::new_ustar();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "etc/os-patch", &body[..])
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let image = format!("{}:{name}", layout.display());
    run_tool(
        "umoci",
        &[
            "raw",
            "add-layer",
            "--image",
            &image,
            &patch.display().to_string(),
        ],
        &[],
    );
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{reference}"),
        ],
        &[],
    );
}

#[test]
fn another_project_builds_only_what_it_does_not_share_and_an_os_patch_rebuilds_no_wheel() {
    let registry = RegistryServer::start();
    let server = CacheServer::local();
    let from = push_python_image(&registry);
    let web = project_with(
        &from,
        &format!("{}/acme/web-base", registry.host()),
        Some(&server.base_url()),
    );
    let (cold, cold_seconds) = ensure(&web, &[]);
    assert_eq!(built(&cold).len(), 18 + 1, "{cold}");

    // Another project in another repository, sharing the team's records:
    // of its packages only the one web does not have is built; the others
    // are mounted from web's repository.
    let api = project_with(
        &from,
        &format!("{}/acme/api-base", registry.host()),
        Some(&server.base_url()),
    );
    api.write(
        "requirements.txt",
        &REQUIREMENTS
            .replace("flask==3.0.3\n", "")
            .replace("blinker==1.8.2\n", "")
            .replace("six==1.16.0", "six==1.17.0"),
    );
    let uploaded = || registry.requests_containing("\"PUT /v2/acme/api-base/blobs/uploads/");
    let (shared, _) = ensure(&api, &[]);
    assert_eq!(built(&shared), ["six==1.17.0", "glue"], "{shared}");
    assert_eq!(shared["package_layers"].as_array().unwrap().len(), 16 + 1);
    // Uploaded: six, the glue and the config; every other blob is mounted.
    assert_eq!(uploaded(), 3);
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpacked(shared["reference"].as_str().unwrap(), scratch.path(), "api");
    let imports =
        "import six, requests, zope.interface; from PIL import Image; print(six.__version__)";
    assert_eq!(run_in(&rootfs, &["python3", "-c", imports]), "1.17.0");

    // The from image is patched under its tag: a new base, but every
    // wheel here is pure Python or manylinux, so no package is installed
    // again; only the glue (the image's interpreter writes its scripts).
    push_patched_python_image(&from);
    let (patched, patched_seconds) = ensure(&web, &[]);
    assert_eq!(patched["source"], "built");
    assert_ne!(patched["key"], cold["key"]);
    assert_eq!(built(&patched), ["glue"], "{patched}");
    let patched_layers = layers(patched["reference"].as_str().unwrap());
    let cold_layers = layers(cold["reference"].as_str().unwrap());
    let from_now = layers(&from);
    assert!(from_now.iter().all(|layer| patched_layers.contains(layer)));
    let reused = cold_layers
        .iter()
        .filter(|layer| patched_layers.contains(layer))
        .count();
    assert!(reused >= 18, "{reused} of the cold base's layers reused");
    eprintln!(
        "package layers: cold {cold_seconds:.1} s, after an OS patch {patched_seconds:.1} s ({:.0} %)",
        patched_seconds / cold_seconds * 100.0
    );
}

/// The layer digests of image `name` in the OCI layout at `layout`.
fn layout_layers(layout: &Path, name: &str) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["annotations"]["org.opencontainers.image.ref.name"] == name)
        .and_then(|entry| entry["digest"].as_str())
        .unwrap_or_else(|| panic!("{name} is not in {index}"))
        .to_owned();
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn package_layers_go_to_an_oci_layout_and_the_variable_turns_them_off() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let project = project(&from, "oci:./build/oci:base");
    let layout = project.path().join("build/oci");
    let (cold, _) = ensure(&project, &[]);
    let cold_tag = format!("base-{}", &cold["key"].as_str().unwrap()[..16]);
    let cold_layers = layout_layers(&layout, &cold_tag);
    assert_eq!(cold_layers.len(), 1 + 18 + 1, "{cold}");

    // A bump: six's layer is built, every other one found in the layout.
    project.write(
        "requirements.txt",
        &REQUIREMENTS.replace("six==1.16.0", "six==1.17.0"),
    );
    let (bumped, _) = ensure(&project, &[]);
    assert_eq!(built(&bumped), ["six==1.17.0", "glue"], "{bumped}");
    let bumped_tag = format!("base-{}", &bumped["key"].as_str().unwrap()[..16]);
    let bumped_layers = layout_layers(&layout, &bumped_tag);
    let new = bumped_layers
        .iter()
        .filter(|layer| !cold_layers.contains(layer))
        .count();
    assert_eq!(new, 1);

    // CACHECTL_PACKAGE_LAYERS=off: one layer, and another key.
    let off = project
        .cachectl(
            &["ensure-base", "--json"],
            &[("CACHECTL_PACKAGE_LAYERS", "off")],
        )
        .success()
        .json();
    assert_ne!(off["key"], bumped["key"]);
    assert!(off.get("package_layers").is_none(), "{off}");
    let off_tag = format!("base-{}", &off["key"].as_str().unwrap()[..16]);
    assert_eq!(layout_layers(&layout, &off_tag).len(), 1 + 1);
    // A value that is neither is refused, naming the setting.
    let refused = project.cachectl(&["hash"], &[("CACHECTL_PACKAGE_LAYERS", "maybe")]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("package_layers"),
        "{}",
        refused.stderr
    );
}

/// Writes `wheels/NAME-1.0-py3-none-any.whl`: package `NAME` (its module
/// `NAME.py`) that also writes `shared/data.txt` holding `data`.
fn write_clashing_wheel(folder: &Path, name: &str, data: &str) {
    let wheel = folder.join(format!("wheels/{name}-1.0-py3-none-any.whl"));
    std::fs::create_dir_all(wheel.parent().unwrap()).unwrap();
    let script = r#"
import sys, zipfile
name, data, path = sys.argv[1], sys.argv[2], sys.argv[3]
info = f"{name}-1.0.dist-info"
files = {
    f"{name}.py": "VALUE = 1\n",
    "shared/data.txt": data,
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
with zipfile.ZipFile(path, "w") as out:
    for entry, text in files.items():
        out.writestr(entry, text)
    out.writestr(f"{info}/RECORD", record)
"#;
    let status = Command::new("python3")
        .args(["-c", script, name, data])
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn two_packages_writing_one_path_are_named_and_the_image_holds_what_pip_leaves() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let project = Project::new();
    write_clashing_wheel(project.path(), "clash_a", "from a\n");
    write_clashing_wheel(project.path(), "clash_b", "from b\n");
    project.write("requirements.txt", "clash-a==1.0\nclash-b==1.0\n");
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{}/acme/clash-base"
manifests = ["requirements.txt"]
builder = "native"
from = "{from}"
install = "pip install --no-index --no-cache-dir --disable-pip-version-check --find-links wheels --target {{out}}/opt/deps -r requirements.txt"
platform = "linux/amd64"
"#,
            registry.host()
        ),
    );
    let (layered, _) = ensure(&project, &[]);
    let warnings = layered["warnings"].to_string();
    assert!(
        warnings.contains("clash-a==1.0 and clash-b==1.0 write /opt/deps/shared/data.txt"),
        "{layered}"
    );
    let (single, _) = ensure(&project, &["--package-layers", "off"]);
    let scratch = tempfile::tempdir().unwrap();
    let data = |report: &serde_json::Value, name: &str| {
        let rootfs = unpacked(report["reference"].as_str().unwrap(), scratch.path(), name);
        std::fs::read_to_string(rootfs.join("opt/deps/shared/data.txt")).unwrap()
    };
    // The bytes pip's own install of the whole plan leaves.
    assert_eq!(data(&layered, "layered"), data(&single, "single"));
}

#[test]
fn a_small_layer_budget_groups_packages_and_gives_one_that_keeps_changing_its_own_layer() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let project = project(&from, &format!("{}/acme/web-base", registry.host()));
    let from_layers = layers(&from).len();
    // --max-layers, as a user types it: 18 packages in 8 layers.
    let budget = ["--max-layers", "8"];
    let (first, _) = ensure(&project, &budget);
    let first_layers = layers(first["reference"].as_str().unwrap());
    assert!(first_layers.len() <= 8, "{} layers", first_layers.len());
    let reported = first["package_layers"].as_array().unwrap();
    let grouped = reported
        .iter()
        .any(|layer| layer["packages"].as_array().unwrap().len() > 1);
    assert!(grouped, "{first}");
    assert_eq!(
        reported.len() + from_layers,
        first_layers.len(),
        "the report names every layer"
    );
    // The budget is part of the key.
    let (default, _) = ensure(&project, &[]);
    assert_ne!(default["key"], first["key"]);

    // six bumped and bumped back: the second time it changes, it is the
    // package that changes most, and has a layer of its own.
    let own_layer = |report: &serde_json::Value, six: &str| {
        report["package_layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|layer| layer["packages"] == serde_json::json!([six]))
    };
    assert!(!own_layer(&first, "six==1.16.0"), "{first}");
    project.write(
        "requirements.txt",
        &REQUIREMENTS.replace("six==1.16.0", "six==1.17.0"),
    );
    let (bumped, _) = ensure(&project, &budget);
    assert!(layers(bumped["reference"].as_str().unwrap()).len() <= 8);
    project.write("requirements.txt", REQUIREMENTS);
    let (back, _) = ensure(&project, &["--max-layers", "8", "--force"]);
    assert!(own_layer(&back, "six==1.16.0"), "{back}");
    let back_ref = back["reference"].as_str().unwrap().to_owned();
    assert!(layers(&back_ref).len() <= 8);

    // The grouped image runs.
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpacked(&back_ref, scratch.path(), "image");
    let imports = "import flask, six, zope.interface, requests; from PIL import Image; print(six.__version__)";
    assert_eq!(run_in(&rootfs, &["python3", "-c", imports]), "1.16.0");
    // A budget the from image leaves no room in is refused at the start.
    let refused = project.cachectl(&["hash", "--max-layers", "2"], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("max_layers"), "{}", refused.stderr);
}

/// A Node project of `tests/npm/PLAN` (express, semver, esbuild with its
/// install script and its platform package, a dev dependency) whose native
/// base starts from `from` and goes to `image`, installing from the npm
/// registry at `npm_registry` (its `.npmrc`), with the recipe `cachectl
/// init` writes.
fn npm_project(from: &str, image: &str, npm_registry: &str) -> Project {
    let project = Project::new();
    write_npm_plan(&project, "plan");
    project.write(".npmrc", &format!("registry={npm_registry}/\n"));
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{image}"
manifests = ["package.json", "package-lock.json", ".npmrc"]
builder = "native"
from = "{from}"
install = "mkdir -p {{out}}/app && cp package.json package-lock.json .npmrc {{out}}/app/ && cd {{out}}/app && npm ci --omit=dev --no-audit --no-fund"
platform = "linux/amd64"
"#
        ),
    );
    project
}

/// Runs `script` with `sh` in `/app` of the image unpacked at `rootfs`;
/// its trimmed stdout. Fails the test unless it succeeds.
fn run_in_app(rootfs: &Path, script: &str) -> String {
    let run = Command::new("chroot")
        .arg(rootfs)
        .args(["/bin/sh", "-c", &format!("cd /app && {script}")])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    String::from_utf8_lossy(&run.stdout).trim().to_owned()
}

#[test]
fn an_npm_bump_rebuilds_one_package_layer_and_the_image_equals_npm_ci() {
    let registry = RegistryServer::start();
    let npm_registry = Nginx::serve_files(&deps_dir().join("npm-packages"), 1);
    let from = push_node_npm_image(&registry);
    let image = format!("{}/acme/node-base", registry.host());
    let project = npm_project(&from, &image, &npm_registry.base_url());

    // Cold: a layer per installed package (no dev dependency, no other
    // platform's esbuild), and the glue.
    let (cold, cold_seconds) = ensure(&project, &[]);
    assert_eq!(cold["source"], "built", "{cold}");
    let reported = cold["package_layers"].as_array().unwrap();
    let names: Vec<&str> = reported
        .iter()
        .map(|layer| layer["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 75 + 1, "{names:?}");
    for name in [
        "express",
        "semver",
        "esbuild",
        "@esbuild/linux-x64",
        "send/node_modules/ms",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(
        !names.contains(&"is-number"),
        "a dev dependency was installed"
    );
    assert!(!names.contains(&"@esbuild/darwin-arm64"));
    assert_eq!(names.last(), Some(&"glue"));
    let cold_ref = cold["reference"].as_str().unwrap().to_owned();
    let cold_layers = layers(&cold_ref);

    // It runs: the packages load, esbuild's install script ran in the
    // image (its binary works), the `.bin` links work.
    let scratch = tempfile::tempdir().unwrap();
    let layered = unpacked(&cold_ref, scratch.path(), "layered");
    let ran = run_in_app(
        &layered,
        "node -e \"require('express'); console.log(require('esbuild').transformSync('let a = 1').code.trim())\" && node_modules/.bin/semver 1.2.3 && node_modules/.bin/esbuild --version",
    );
    assert_eq!(ran, "let a = 1;\n1.2.3\n0.24.2");

    // A bump of one small package rebuilds its layer only, and the glue.
    write_npm_plan(&project, "bumped");
    let uploads = registry.blob_upload_requests();
    let (bumped, bump_seconds) = ensure(&project, &[]);
    assert_eq!(
        bumped["plan_changes"],
        serde_json::json!(["semver 7.6.3 -> 7.7.1"]),
        "{bumped}"
    );
    // `hash --explain` shows the plan npm installs, nested paths included.
    let explained = project
        .cachectl(&["hash", "--explain", "--json"], &[])
        .success()
        .json();
    let plan = explained["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 75, "{explained}");
    for entry in [
        "semver==7.7.1",
        "send/node_modules/ms==2.1.3",
        "@esbuild/linux-x64==0.24.2",
    ] {
        assert!(
            plan.contains(&serde_json::json!(entry)),
            "{entry}: {explained}"
        );
    }
    let built: Vec<&str> = bumped["package_layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|layer| layer["source"] == "built")
        .map(|layer| layer["name"].as_str().unwrap())
        .collect();
    assert_eq!(built, ["semver", "glue"]);
    let bumped_ref = bumped["reference"].as_str().unwrap().to_owned();
    let new: Vec<String> = layers(&bumped_ref)
        .into_iter()
        .filter(|layer| !cold_layers.contains(layer))
        .collect();
    assert_eq!(new.len(), 2, "semver's layer and the glue: {new:?}");
    assert!(
        registry.blob_upload_requests() - uploads <= 3,
        "{} blobs uploaded",
        registry.blob_upload_requests() - uploads
    );
    eprintln!(
        "npm package layers: cold {cold_seconds:.1} s, one-package bump {bump_seconds:.1} s ({:.0} %)",
        bump_seconds / cold_seconds * 100.0
    );
    let bumped_root = unpacked(&bumped_ref, scratch.path(), "bumped");
    assert_eq!(
        run_in_app(&bumped_root, "node_modules/.bin/semver --help | head -1"),
        "SemVer 7.7.1"
    );

    // The bumped plan as one layer (`npm ci` as it is, by the variable):
    // the same files, bytes, modes and links under /app (semver unpacked
    // here, the rest from npm ci in the image).
    let one_ref = one_layer(&project, &registry);
    assert_eq!(layers(&one_ref).len(), layers(&from).len() + 1);
    let single = unpacked(&one_ref, scratch.path(), "single");
    let (layered_tree, single_tree) = (tree(&bumped_root.join("app")), tree(&single.join("app")));
    assert!(layered_tree.len() > 700, "{}", layered_tree.len());
    assert_eq!(
        differences(&layered_tree, &single_tree),
        Vec::<String>::new()
    );

    // --force builds every layer again (all by npm ci, as esbuild needs
    // it): the same digests.
    let (forced, _) = ensure(&project, &["--force"]);
    assert_eq!(forced["reference"], bumped["reference"], "{forced}");
}

/// The base of `project` as one layer (`CACHECTL_PACKAGE_LAYERS=off`) in
/// another repository of `registry`; its reference.
fn one_layer(project: &Project, registry: &RegistryServer) -> String {
    let single_image = format!("{}/acme/node-one", registry.host());
    let one = project
        .cachectl(
            &["ensure-base", "--json", "--image", &single_image],
            &[("CACHECTL_PACKAGE_LAYERS", "off")],
        )
        .success()
        .json();
    one["reference"].as_str().unwrap().to_owned()
}

#[test]
fn a_lock_without_install_scripts_is_unpacked_here_and_equals_npm_ci() {
    let registry = RegistryServer::start();
    let npm_registry = Nginx::serve_files(&deps_dir().join("npm-packages"), 1);
    let from = push_node_npm_image(&registry);
    let image = format!("{}/acme/node-base", registry.host());
    let project = npm_project(&from, &image, &npm_registry.base_url());
    // With --ignore-scripts no package needs npm ci in the image: every
    // tarball is fetched and unpacked by cachectl.
    let config = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    project.write(
        "cachectl.toml",
        &config.replace("npm ci --omit=dev", "npm ci --omit=dev --ignore-scripts"),
    );
    let run = project
        .cachectl(
            &["ensure-base", "--json", "--package-layers", "on"],
            &[("RUST_LOG", "cache_cli::builder::npm_install=debug")],
        )
        .success();
    let cold = run.json();
    assert!(
        !run.stderr.contains("npm ci in the image"),
        "npm ci ran: {}",
        run.stderr
    );
    let reported = cold["package_layers"].as_array().unwrap();
    assert_eq!(reported.len(), 75 + 1, "{cold}");
    let scratch = tempfile::tempdir().unwrap();
    let layered = unpacked(
        cold["reference"].as_str().unwrap(),
        scratch.path(),
        "layered",
    );
    let single = unpacked(&one_layer(&project, &registry), scratch.path(), "single");
    let (layered_tree, single_tree) = (tree(&layered.join("app")), tree(&single.join("app")));
    assert!(layered_tree.len() > 700, "{}", layered_tree.len());
    assert_eq!(
        differences(&layered_tree, &single_tree),
        Vec::<String>::new()
    );
    assert_eq!(
        run_in_app(
            &layered,
            "node -e \"require('express')\" && node_modules/.bin/semver 1.2.3"
        ),
        "1.2.3"
    );
}

#[test]
fn an_os_patch_rebuilds_only_the_npm_package_with_an_install_script_in_a_layout() {
    let registry = RegistryServer::start();
    let npm_registry = Nginx::serve_files(&deps_dir().join("npm-packages"), 1);
    let from = push_node_npm_image(&registry);
    let project = npm_project(&from, "oci:./build/oci:node-base", &npm_registry.base_url());
    let layout = project.path().join("build/oci");
    let (cold, _) = ensure(&project, &[]);
    let cold_tag = format!("base-{}", &cold["key"].as_str().unwrap()[..16]);
    let from_layers = layers(&from).len();
    assert_eq!(
        layout_layers(&layout, &cold_tag).len(),
        from_layers + 75 + 1,
        "{cold}"
    );

    // The from image moves under its tag: esbuild, whose install script
    // ran in the image, is built again (by npm ci there); every tarball's
    // layer is the same.
    push_patched_image("node-npm-image:node", &from);
    let (patched, _) = ensure(&project, &[]);
    assert_ne!(patched["key"], cold["key"]);
    assert_eq!(built(&patched), ["esbuild==0.24.2", "glue"], "{patched}");

    // A project whose own package.json runs a script at install: one
    // layer, as npm ci leaves it, and the build says why.
    let package_json = std::fs::read_to_string(project.path().join("package.json")).unwrap();
    project.write(
        "package.json",
        &package_json.replacen(
            "\"private\": true,",
            "\"private\": true,\n  \"scripts\": {\"postinstall\": \"node -e \\\"require('fs').writeFileSync('made', 'x')\\\"\"},",
            1,
        ),
    );
    let one = project.cachectl(&["ensure-base", "--json"], &[]).success();
    let report = one.json();
    assert!(report.get("package_layers").is_none(), "{report}");
    let said = report["warnings"].to_string();
    assert!(said.contains("postinstall"), "{report}");
    let one_tag = format!("base-{}", &report["key"].as_str().unwrap()[..16]);
    let patched_from_layers = layers(&from).len();
    assert_eq!(patched_from_layers, from_layers + 1);
    assert_eq!(
        layout_layers(&layout, &one_tag).len(),
        patched_from_layers + 1
    );
}
