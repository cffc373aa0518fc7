//! `django-bench`: the deploy the product exists for, on a Django project
//! with ten real packages from PyPI (Django, gunicorn, psycopg2-binary,
//! djangorestframework, celery, redis, boto3, Pillow, whitenoise,
//! django-environ and their dependencies, 31 wheels) and a `Dockerfile.base`
//! built by buildah.
//!
//! Measured, in one run against one loopback registry:
//!
//! - **cachectl**: `cachectl build` after an app change, the base already
//!   built (the deploy step of every commit that does not touch the
//!   requirements): on the machine that built the base, and on a fresh
//!   runner (an empty cachectl folder);
//! - **warm `buildah bud --layers`** of the whole Dockerfile (the base's
//!   steps, then the app) after the same app change, with the layer cache
//!   of the previous build, then `buildah push`: what a team gets from a
//!   well-cached Dockerfile on a runner that keeps its storage;
//! - **`buildah bud --no-cache`** + push: the image rebuilt from its `FROM`,
//!   what a Dockerfile costs on a runner whose cache is gone.
//!
//! Also measured: the bytes each app-only deploy adds to the registry's
//! storage (its blob uploads), for this deploy (the app layered by change,
//! the default), the same tree as one app layer (`CACHECTL_APP_LAYERS=one`,
//! to another repository) and buildah's push. The app holds 8 MB of static
//! assets and images beside its code, as a real site's does.
//!
//! Also measured, as the floor of any client: the requests the registry
//! API requires for the same deploy (the base's manifest, a new layer and
//! config, the manifest under the tag and a deploy tag) sent by hand, after
//! the same pause. With `DJANGO_BENCH_BASELINE=PATH` another cachectl
//! binary (an earlier commit's) deploys the same project in turn with this
//! one, first in every other run, for a before/after ratio in one run.
//!
//! The wheels are downloaded from PyPI once, into
//! `$CACHECTL_BENCH_CACHE/django-wheels` (default `~/.cache/cachectl-bench`),
//! outside the checkout; every build installs from them. The final image
//! is unpacked and Django, DRF, Celery, Pillow, boto3 and psycopg2 are
//! imported in it under `chroot`, so the images measured are real.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin django-bench -- [RUNS]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::buildah::{borrowed, counting_buildah_on};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::random_bytes;
use cachectl_e2e::python::push_python_image;
use cachectl_e2e::raw_http::{Outcome, exchange};
use cachectl_e2e::registry::{RegistryServer, unpack};
use serde_json::json;

/// The project's requirements: ten packages, pinned.
const REQUIREMENTS: &str = "\
Django==5.1.4
gunicorn==23.0.0
psycopg2-binary==2.9.10
djangorestframework==3.15.2
celery==5.4.0
redis==5.2.1
boto3==1.35.90
Pillow==11.0.0
whitenoise==6.8.2
django-environ==0.11.2
";

/// The base's steps, shared by `Dockerfile.base` and the whole Dockerfile.
const BASE_STEPS: &str = "\
COPY requirements.txt /tmp/requirements.txt
COPY wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels --no-cache-dir \
--disable-pip-version-check --target /opt/deps -r /tmp/requirements.txt
";

/// The app's steps of the whole Dockerfile (what `[app]` does).
const APP_STEPS: &str = "\
COPY app /app
ENV PYTHONPATH=/opt/deps
WORKDIR /app
CMD [\"python3\", \"-m\", \"gunicorn\", \"--bind\", \"0.0.0.0:8000\", \"mysite.wsgi\"]
";

/// The Python of the Debian bookworm image (its markers decide some
/// dependencies: redis needs async-timeout below 3.11.3).
const PYTHON: &str = "3.11.2";

/// Dependencies that only Python's full version brings in, which
/// `pip download --python-version` does not evaluate.
const MARKER_ONLY: &[&str] = &["async-timeout>=4.0.3"];

/// The wheels of [`REQUIREMENTS`] for [`PYTHON`] on x86-64, downloaded once.
fn wheels() -> anyhow::Result<PathBuf> {
    let root = match std::env::var_os("CACHECTL_BENCH_CACHE") {
        Some(folder) => PathBuf::from(folder),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/cachectl-bench"),
    };
    let folder = root.join("django-wheels");
    let marker = folder.join(format!(
        ".complete-{}",
        &blake3::hash(format!("{PYTHON}\n{REQUIREMENTS}{MARKER_ONLY:?}").as_bytes()).to_hex()[..16]
    ));
    if marker.exists() {
        return Ok(folder);
    }
    std::fs::create_dir_all(&folder)?;
    let requirements = folder.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    eprintln!("downloading the wheels into {}", folder.display());
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--only-binary=:all:"])
        .args(["--platform", "manylinux2014_x86_64"])
        .args(["--platform", "manylinux_2_17_x86_64"])
        .args(["--platform", "manylinux_2_28_x86_64"])
        .args(["--python-version", PYTHON, "--implementation", "cp"])
        .args(["--abi", "cp311", "-d"])
        .arg(&folder)
        .arg("-r")
        .arg(&requirements)
        .args(MARKER_ONLY)
        .status()
        .context("running python3 -m pip download")?;
    if !status.success() {
        bail!("pip download failed: {status}");
    }
    std::fs::remove_file(&requirements)?;
    std::fs::write(&marker, "")?;
    Ok(folder)
}

/// The Django project: its app, requirements, wheels, `Dockerfile.base`, the
/// whole `Dockerfile` and `cachectl.toml`.
fn django_project(registry: &RegistryServer, from: &str, wheels: &Path) -> anyhow::Result<Project> {
    let project = Project::new();
    project.write("requirements.txt", REQUIREMENTS);
    std::fs::create_dir_all(project.path().join("wheels"))?;
    for entry in std::fs::read_dir(wheels)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".whl") {
            std::fs::copy(entry.path(), project.path().join("wheels").join(name))?;
        }
    }
    project.write("Dockerfile.base", &format!("FROM {from}\n{BASE_STEPS}"));
    project.write(
        "Dockerfile",
        &format!("FROM {from}\n{BASE_STEPS}{APP_STEPS}"),
    );
    project.write(".dockerignore", ".cachectl\n");
    project.write(
        "app/manage.py",
        "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n\
         from django.core.management import execute_from_command_line\n\
         execute_from_command_line(sys.argv)\n",
    );
    project.write("app/mysite/__init__.py", "");
    project.write(
        "app/mysite/settings.py",
        "SECRET_KEY = 'bench'\nDEBUG = False\nALLOWED_HOSTS = ['*']\nROOT_URLCONF = 'mysite.urls'\n\
         INSTALLED_APPS = ['django.contrib.contenttypes', 'rest_framework']\n\
         MIDDLEWARE = ['whitenoise.middleware.WhiteNoiseMiddleware']\n\
         DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': '/tmp/db.sqlite3'}}\n",
    );
    project.write(
        "app/mysite/urls.py",
        "from django.urls import path\nfrom . import views\nurlpatterns = [path('', views.index)]\n",
    );
    project.write(
        "app/mysite/wsgi.py",
        "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n\
         from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n",
    );
    write_view(&project, 0);
    write_assets(&project)?;
    let host = registry.host();
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{host}/bench/django-base"
manifests = ["requirements.txt", "Dockerfile.base"]
builder = "buildah"
dockerfile = "Dockerfile.base"
from = "{from}"
platform = "linux/amd64"

[app]
image = "{host}/bench/django:latest"
context = "app"
dest = "/app"
workdir = "/app"
cmd = ["python3", "-m", "gunicorn", "--bind", "0.0.0.0:8000", "mysite.wsgi"]
env = {{ PYTHONPATH = "/opt/deps" }}
"#
        ),
    );
    Ok(project)
}

/// What a real site's app folder holds beside its code, as bakerydemo's
/// does: 240 stylesheets and scripts (1.9 MB of text) and 12 images
/// (6 MB that do not compress), none of which an app-only deploy changes.
fn write_assets(project: &Project) -> anyhow::Result<()> {
    for n in 0..240 {
        let rule = format!(".block-{n} {{ margin: {n}px; padding: 0 {n}px; }}\n");
        project.write(
            &format!("app/static/css/block_{n:03}.css"),
            &rule.repeat(180),
        );
    }
    let images = project.path().join("app/media/images");
    std::fs::create_dir_all(&images)?;
    for n in 0..12 {
        let bytes = random_bytes(500_000, n);
        std::fs::write(images.join(format!("photo_{n:02}.jpg")), bytes)?;
    }
    Ok(())
}

/// The app change of deploy `release`.
fn write_view(project: &Project, release: usize) {
    project.write(
        "app/mysite/views.py",
        &format!(
            "from django.http import JsonResponse\n\ndef index(request):\n    \
             return JsonResponse({{'release': {release}}})\n"
        ),
    );
}

/// `cachectl build --json` (of `binary`, else this build); its report and
/// wall seconds.
fn cachectl_build(
    project: &Project,
    env: &[(&str, &str)],
    binary: Option<&Path>,
) -> anyhow::Result<(serde_json::Value, f64)> {
    settle();
    let started = Instant::now();
    let run = match binary {
        Some(binary) => project.cachectl_from(binary, &["build", "--json"], env),
        None => project.cachectl(&["build", "--json"], env),
    };
    let seconds = started.elapsed().as_secs_f64();
    if run.code != 0 {
        bail!("cachectl build failed:\n{}", run.stderr);
    }
    Ok((run.json(), seconds))
}

/// A pause before each measured step, so that none starts while the
/// registry or the disk is still busy with the step before (a deploy that
/// followed a buildah push measured 67 ms against 41 ms after another
/// cachectl deploy).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// `buildah ARGS` in `project` with `env`; its wall seconds.
fn buildah(project: &Project, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<f64> {
    settle();
    let started = Instant::now();
    let output = Command::new("buildah")
        .args(args)
        .current_dir(project.path())
        .envs(env.iter().copied())
        .output()
        .context("running buildah")?;
    if !output.status.success() {
        bail!(
            "buildah {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The whole Dockerfile built by buildah with `extra` flags, then pushed;
/// (build, push) seconds.
fn buildah_deploy(
    project: &Project,
    env: &[(&str, &str)],
    extra: &str,
    destination: &str,
) -> anyhow::Result<(f64, f64)> {
    let build = buildah(
        project,
        env,
        &[
            "bud",
            extra,
            "--tls-verify=false",
            "-f",
            "Dockerfile",
            "-t",
            "localhost/django-ref",
            ".",
        ],
    )?;
    let push = buildah(
        project,
        env,
        &[
            "push",
            "--tls-verify=false",
            "localhost/django-ref",
            destination,
        ],
    )?;
    Ok((build, push))
}

/// One request on a new connection (as a new process makes them); its
/// status and the text read back.
fn request(registry: &RegistryServer, head: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut bytes = format!(
        "{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        registry.host(),
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    match exchange(
        registry.address(),
        &bytes,
        std::time::Duration::from_secs(30),
    ) {
        Outcome::Answered(response) => Ok((response.status, response.text)),
        other => bail!("{head}: {other:?}"),
    }
}

/// Uploads `bytes` as a blob of `repository`: a POST, then a PUT with the
/// digest (what the registry API requires of a new blob).
fn upload(registry: &RegistryServer, repository: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let (status, text) = request(
        registry,
        &format!("POST /v2/{repository}/blobs/uploads/ HTTP/1.1"),
        b"",
    )?;
    let location = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .with_context(|| format!("POST answered {status} without a Location"))?;
    let path = location
        .strip_prefix(&format!("http://{}", registry.host()))
        .unwrap_or(&location);
    let digest = cache_cli::image::oci::sha256_digest(bytes);
    let separator = if path.contains('?') { '&' } else { '?' };
    let (status, _) = request(
        registry,
        &format!("PUT {path}{separator}digest={digest} HTTP/1.1"),
        bytes,
    )?;
    if status != 201 {
        bail!("blob PUT answered {status}");
    }
    Ok(digest)
}

/// The least any client must ask of this registry for the same deploy,
/// timed from the same pause as the deploys: the base's manifest, a new
/// layer and a new config (each a POST then a PUT, the two at once), the
/// manifest under a tag, then under a deploy tag; every request on a new
/// connection. No process start, no packing, no checks: the floor the
/// registry's API and storage set on this machine.
fn registry_floor(registry: &RegistryServer, base: &str, round: usize) -> anyhow::Result<f64> {
    let (repository, digest) = base
        .split_once('/')
        .and_then(|(_, rest)| rest.split_once('@'))
        .context("the base reference names a digest")?;
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let (_, text) = request(
        registry,
        &format!("GET /v2/{repository}/manifests/{digest} HTTP/1.1\r\n{accept}"),
        b"",
    )?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let manifest: serde_json::Value = serde_json::from_str(body).context("the base manifest")?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    let layer_type = if media_type.contains("docker") {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    // New content each round, of a deploy's sizes (an 850-byte layer, a
    // 2 KB config).
    let stamp = format!("{round}-{:?}", std::time::SystemTime::now());
    let layer = format!("{stamp}{}", "l".repeat(850)).into_bytes();
    let config = format!("{{\"floor\": \"{stamp}{}\"}}", "c".repeat(1900)).into_bytes();
    let app = "bench/django";

    settle();
    let started = Instant::now();
    request(
        registry,
        &format!("HEAD /v2/{repository}/manifests/{digest} HTTP/1.1\r\n{accept}"),
        b"",
    )?;
    let (layer_digest, config_digest) = std::thread::scope(|scope| {
        let config = scope.spawn(|| upload(registry, app, &config));
        let layer = upload(registry, app, &layer);
        (layer, config.join().expect("the config upload"))
    });
    let (layer_digest, config_digest) = (layer_digest?, config_digest?);
    let mut layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    layers.push(json!({"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}));
    let config_type = manifest["config"]["mediaType"].clone();
    let pushed = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))?;
    for tag in ["floor".to_owned(), format!("floor.deploy-{round}")] {
        let (status, text) = request(
            registry,
            &format!("PUT /v2/{app}/manifests/{tag} HTTP/1.1\r\nContent-Type: {media_type}"),
            &pushed,
        )?;
        if status != 201 {
            bail!("manifest PUT answered {status}: {text}");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Imports the packages in the unpacked `image` under `chroot`; returns
/// Django's version.
fn check_image(image: &str) -> anyhow::Result<String> {
    let scratch = tempfile::tempdir()?;
    let bundle = unpack(&format!("docker://{image}"), scratch.path());
    let output = Command::new("chroot")
        .arg(bundle.join("rootfs"))
        .args(["/usr/bin/env", "PYTHONPATH=/opt/deps", "python3", "-c"])
        .arg(
            "import django, rest_framework, celery, PIL, boto3, psycopg2, redis, gunicorn, \
             whitenoise, environ; print(django.get_version())",
        )
        .output()
        .context("running chroot")?;
    if !output.status.success() {
        bail!(
            "the image does not import its packages:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn main() -> anyhow::Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("RUNS must be a whole number")?,
        None => 5,
    };
    let wheels = wheels()?;
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let project = django_project(&registry, &from, &wheels)?;
    let scratch = tempfile::tempdir()?;
    // overlay when the machine allows it (buildah's fast path), else vfs.
    let driver = std::env::var("DJANGO_BENCH_DRIVER").unwrap_or_else(|_| "overlay".into());
    let env_owned = counting_buildah_on(&project.marker(), scratch.path(), &driver);
    let env = borrowed(&env_owned);

    // The first deploy builds and pushes the base (buildah), then the app.
    let (first, cold_cachectl) = cachectl_build(&project, &env, None)?;
    eprintln!("cachectl, first deploy (base built by buildah): {cold_cachectl:.2} s");

    // The references: the whole Dockerfile, first warming the layer cache.
    let destination = format!("docker://{}/bench/django-ref:latest", registry.host());
    buildah_deploy(&project, &env, "--layers", &destination)?;
    let (mut ours, mut fresh, mut warm, mut warm_build, mut floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Another cachectl (an earlier commit's) deploying the same project in
    // turn with this one: a before/after figure free of the machine's drift.
    let baseline_binary = std::env::var_os("DJANGO_BENCH_BASELINE").map(PathBuf::from);
    let mut baseline = Vec::new();
    // The bytes each deploy added to the registry's storage: this one's
    // (the app by change, the default), the same app as one layer, and
    // buildah's.
    let (mut ours_bytes, mut one_layer_bytes, mut warm_bytes) =
        (Vec::new(), Vec::new(), Vec::new());
    let one_layer_image = format!("{}/bench/django-one:latest", registry.host());
    let mut one_layer_env = env.clone();
    one_layer_env.push(("CACHECTL_APP_LAYERS", "one"));
    one_layer_env.push(("CACHECTL_APP_IMAGE", &one_layer_image));
    for run in 1..=runs {
        // The other build deploys first in every other run: the first
        // deploy of a run follows the buildah push of the run before.
        if let Some(binary) = baseline_binary.as_deref().filter(|_| run % 2 == 0) {
            write_view(&project, 3 * runs + run);
            baseline.push(cachectl_build(&project, &env, Some(binary))?.1);
        }
        write_view(&project, run);
        let stored = registry.stored_blob_bytes();
        let (report, seconds) = cachectl_build(&project, &env, None)?;
        if report["base"]["source"] == "built" {
            bail!("a deploy rebuilt the base: {report}");
        }
        ours.push(seconds);
        ours_bytes.push(registry.stored_blob_bytes() - stored);
        // The same tree deployed as one app layer, to another repository.
        let stored = registry.stored_blob_bytes();
        cachectl_build(&project, &one_layer_env, None)?;
        one_layer_bytes.push(registry.stored_blob_bytes() - stored);
        if let Some(binary) = baseline_binary.as_deref().filter(|_| run % 2 == 1) {
            // The same deploy by the other build, in turn with ours.
            write_view(&project, 3 * runs + run);
            baseline.push(cachectl_build(&project, &env, Some(binary))?.1);
        }
        // A fresh runner: no cachectl folder, the base only in the registry;
        // its own app change, so that its layer is new to the registry too.
        write_view(&project, runs + run);
        let runner = tempfile::tempdir()?;
        let runner_dir = runner.path().display().to_string();
        let mut fresh_env = env.clone();
        fresh_env.push(("CACHECTL_CACHE_DIR", &runner_dir));
        let (report, seconds) = cachectl_build(&project, &fresh_env, None)?;
        if report["base"]["source"] == "built" {
            bail!("a fresh runner rebuilt the base: {report}");
        }
        fresh.push(seconds);
        floor.push(registry_floor(
            &registry,
            report["base"]["reference"].as_str().unwrap_or_default(),
            run,
        )?);
        let stored = registry.stored_blob_bytes();
        let (build, push) = buildah_deploy(&project, &env, "--layers", &destination)?;
        warm_bytes.push(registry.stored_blob_bytes() - stored);
        warm.push(build + push);
        warm_build.push(build);
        eprintln!(
            "deploy {run}: cachectl {:.3} s, fresh runner {:.3} s, registry floor {:.3} s, buildah --layers {build:.2} s + push {push:.2} s",
            ours[run - 1],
            fresh[run - 1],
            floor[run - 1]
        );
    }
    if let Some(seconds) = std::env::var_os("DJANGO_BENCH_HOLD") {
        // For profiling: the project, its registry and buildah's variables
        // stay up this long.
        eprintln!("holding: cd {} with {env:?}", project.path().display());
        let seconds: u64 = seconds.to_string_lossy().parse().unwrap_or(600);
        std::thread::sleep(std::time::Duration::from_secs(seconds));
    }
    let (no_cache_build, no_cache_push) =
        buildah_deploy(&project, &env, "--no-cache", &destination)?;
    let no_cache = no_cache_build + no_cache_push;
    eprintln!("buildah --no-cache: {no_cache_build:.2} s + push {no_cache_push:.2} s");
    let django = check_image(&format!("{}/bench/django:latest", registry.host()))?;

    // Every run's figures too: the spread says how far a median can move.
    let each_run = json!({
        "cachectl_deploy_s": ours,
        "baseline_deploy_s": baseline,
        "cachectl_fresh_runner_deploy_s": fresh,
        "buildah_layers_deploy_s": warm,
        "registry_floor_deploy_s": floor,
        "cachectl_bytes": ours_bytes,
        "cachectl_one_layer_bytes": one_layer_bytes,
        "buildah_layers_bytes": warm_bytes,
    });
    let median_bytes = |values: &[u64]| median(values.iter().map(|&v| v as f64).collect());
    let (ours_bytes, one_layer_bytes, warm_bytes) = (
        median_bytes(&ours_bytes),
        median_bytes(&one_layer_bytes),
        median_bytes(&warm_bytes),
    );
    eprintln!(
        "bytes pushed per app-only deploy (median): cachectl {ours_bytes:.0}, one app layer {one_layer_bytes:.0}, buildah --layers {warm_bytes:.0}"
    );
    let (ours, fresh, warm, warm_build, floor) = (
        median(ours),
        median(fresh),
        median(warm),
        median(warm_build),
        median(floor),
    );
    let baseline = baseline_binary.map(|binary| {
        let seconds = median(baseline);
        json!({
            "binary": binary.display().to_string(),
            "deploy_s": seconds,
            "cachectl_over_baseline": ours / seconds.max(1e-9),
        })
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "baseline": baseline,
            "packages": REQUIREMENTS.lines().count(),
            "django": django,
            "runs": runs,
            "first_deploy_s": cold_cachectl,
            "first_deploy_base": first["base"]["source"],
            "cachectl_deploy_s": ours,
            "cachectl_fresh_runner_deploy_s": fresh,
            "buildah_layers_deploy_s": warm,
            "buildah_layers_build_s": warm_build,
            "buildah_no_cache_deploy_s": no_cache,
            "registry_floor_deploy_s": floor,
            "registry_floor_over_buildah_layers": floor / warm.max(1e-9),
            "cachectl_over_registry_floor": ours / floor.max(1e-9),
            "cachectl_over_buildah_layers": ours / warm.max(1e-9),
            "cachectl_over_buildah_no_cache": ours / no_cache.max(1e-9),
            "fresh_runner_over_buildah_no_cache": fresh / no_cache.max(1e-9),
            "cachectl_bytes_per_deploy": ours_bytes,
            "cachectl_one_layer_bytes_per_deploy": one_layer_bytes,
            "buildah_layers_bytes_per_deploy": warm_bytes,
            "bytes_over_one_layer": ours_bytes / one_layer_bytes.max(1.0),
            "bytes_over_buildah_layers": ours_bytes / warm_bytes.max(1.0),
            "each_run": each_run,
        }))?
    );
    Ok(())
}
