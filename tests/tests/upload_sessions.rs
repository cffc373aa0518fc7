//! Upload sessions opened ahead: a deploy from a machine that pushed to the
//! app's repository before, whose app tree changed since, opens the upload
//! sessions of the new layer and config while the base is still being
//! resolved, so that each upload is one PUT. Checked against Debian's
//! `docker-registry`, in its access log and its storage: no session is
//! opened for an unchanged app, a session opened and not used is cancelled
//! (the registry keeps no upload), and a registry that needs credentials
//! never sees an anonymous upload.

use std::time::Instant;

use cachectl_e2e::cachectl::{Project, Run};
use cachectl_e2e::fault_proxy::{Fault, FaultProxy, LATENCY};
use cachectl_e2e::registry::{RegistryServer, push_busybox, unpack};

/// The flags of a deploy with a debug log of the registry client.
const DEBUG: (&str, &str) = ("RUST_LOG", "cache_cli::image=debug");

/// The uploads `registry` holds in progress in `repository`: those with a
/// start time or data. (A cancelled upload keeps only its empty hash state
/// in distribution 2.8, and the API no longer knows it; a finished one
/// leaves nothing.)
fn open_uploads(registry: &RegistryServer, repository: &str) -> usize {
    let uploads = registry
        .storage()
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_uploads");
    let Ok(entries) = std::fs::read_dir(uploads) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|upload| {
            let path = upload.path();
            path.join("startedat").exists() || path.join("data").exists()
        })
        .count()
}

/// Upload sessions opened (`POST …/blobs/uploads/`) in `repository`.
fn sessions_opened(registry: &RegistryServer, repository: &str) -> usize {
    registry.requests_containing(&format!("\"POST /v2/{repository}/blobs/uploads/"))
}

/// Upload sessions cancelled (`DELETE …/blobs/uploads/…`) in `repository`.
fn sessions_cancelled(registry: &RegistryServer, repository: &str) -> usize {
    registry.requests_containing(&format!("\"DELETE /v2/{repository}/blobs/uploads/"))
}

/// A native-builder project on `from`, its base in `REG/acme/base`.
fn build_project(registry: &RegistryServer, from: &str) -> Project {
    build_project_at(&registry.host(), from)
}

/// A native-builder project on `from`, its base in `HOST/acme/base`.
fn build_project_at(host: &str, from: &str) -> Project {
    let project = Project::native(&format!("{host}/acme/base"), Some(from));
    project.write("app/main.py", "print('hello')\n");
    project
}

/// `cachectl build --app-image IMAGE --context app`, with the registry
/// client's debug log.
fn build(project: &Project, image: &str) -> Run {
    project
        .cachectl(
            &["build", "--json", "--app-image", image, "--context", "app"],
            &[DEBUG],
        )
        .success()
}

fn app_file(image: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = unpack(&format!("docker://{image}"), scratch.path()).join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file(), "the base is missing");
    std::fs::read_to_string(rootfs.join("app/main.py")).unwrap()
}

#[test]
fn a_changed_app_uploads_through_sessions_opened_ahead_and_an_unchanged_one_opens_none() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = build_project(&registry, &from);
    let image = format!("{}/acme/web:live", registry.host());
    let first = build(&project, &image);
    assert!(
        !first.stderr.contains("opening upload sessions ahead"),
        "nothing was pushed from here before, yet sessions were opened ahead:\n{}",
        first.stderr
    );

    project.write("app/main.py", "print('changed')\n");
    let (opened, checks) = (
        sessions_opened(&registry, "acme/web"),
        registry.blob_checks(),
    );
    let changed = build(&project, &image);
    assert!(
        changed.stderr.contains("count=2"),
        "two sessions (layer and config) were not opened ahead:\n{}",
        changed.stderr
    );
    assert_eq!(
        changed
            .stderr
            .matches("uploaded through a session opened ahead")
            .count(),
        2,
        "{}",
        changed.stderr
    );
    assert_eq!(sessions_opened(&registry, "acme/web") - opened, 2);
    assert_eq!(registry.blob_checks() - checks, 0, "asked for blobs");
    assert_eq!(sessions_cancelled(&registry, "acme/web"), 0);
    assert_eq!(
        open_uploads(&registry, "acme/web"),
        0,
        "an upload was left open"
    );
    assert_eq!(app_file(&image), "print('changed')\n");

    // The same tree again: nothing to upload, no session opened.
    let opened = sessions_opened(&registry, "acme/web");
    let again = build(&project, &image);
    assert_eq!(again.json()["app"]["reused"], true, "{}", again.stdout);
    assert_eq!(sessions_opened(&registry, "acme/web") - opened, 0);
    assert!(!again.stderr.contains("opening upload sessions ahead"));
}

/// What the sessions opened ahead are for: on a distant registry (1 s each
/// way, through a proxy), a changed app's deploy from a warm machine takes
/// four round trips: the base's tags with the upload sessions, the two
/// uploads, the manifest, the deploy tag. Without them the sessions would
/// be a fifth.
#[test]
fn a_changed_app_on_a_distant_registry_deploys_in_four_round_trips() {
    let registry = RegistryServer::start();
    let proxy = FaultProxy::start(registry.address());
    let distant = proxy.address().to_string();
    let from = push_busybox(&registry, "library/busybox", "1").replace(&registry.host(), &distant);
    let project = build_project_at(&distant, &from);
    let image = format!("{distant}/acme/web:live");
    build(&project, &image);

    project.write("app/main.py", "print('from afar')\n");
    proxy.set(Fault::Distant);
    let started = Instant::now();
    let changed = build(&project, &image);
    let took = started.elapsed();
    proxy.set(Fault::None);
    let round_trip = LATENCY * 2;
    assert!(
        took < round_trip * 9 / 2,
        "a changed app's deploy took {took:?} with {round_trip:?} round trips: more than four\n{}",
        changed.stderr
    );
    assert_eq!(app_file(&image), "print('from afar')\n");
}

#[test]
fn sessions_opened_ahead_for_an_app_the_records_know_are_cancelled() {
    let registry = RegistryServer::start();
    let base = push_busybox(&registry, "acme/base", "1");
    let image = format!("{}/acme/web:live", registry.host());
    let project = Project::new();
    project.write("app/main.py", "print('one')\n");
    let layer = |project: &Project| project.layer(&base, &image, &[], &[DEBUG]).success();
    layer(&project);
    project.write("app/main.py", "print('two')\n");
    layer(&project);

    // Back to the first tree: it differs from the last one pushed, so the
    // sessions go out ahead, but the records know it and nothing is
    // uploaded; the sessions are cancelled, and the registry keeps none.
    project.write("app/main.py", "print('one')\n");
    let (opened, cancelled) = (
        sessions_opened(&registry, "acme/web"),
        sessions_cancelled(&registry, "acme/web"),
    );
    let back = layer(&project);
    assert_eq!(back.json()["reused"], true, "{}", back.stdout);
    assert_eq!(sessions_opened(&registry, "acme/web") - opened, 2);
    assert_eq!(
        sessions_cancelled(&registry, "acme/web") - cancelled,
        2,
        "{}",
        back.stderr
    );
    assert_eq!(
        open_uploads(&registry, "acme/web"),
        0,
        "an upload was left open:\n{}",
        back.stderr
    );
    assert_eq!(app_file(&image), "print('one')\n");
}

#[test]
fn a_registry_that_needs_credentials_sees_no_anonymous_upload() {
    let public = RegistryServer::start();
    let base = push_busybox(&public, "acme/base", "1");
    let private = RegistryServer::start_with_htpasswd("ci", "s3cret-pass");
    let image = format!("{}/acme/web:live", private.host());
    let project = Project::new();
    let auth = std::process::Command::new("sh")
        .args(["-c", "printf %s ci:s3cret-pass | base64 -w0"])
        .output()
        .unwrap();
    project.write(
        ".docker/config.json",
        &format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            private.host(),
            String::from_utf8(auth.stdout).unwrap()
        ),
    );
    for release in ["one", "two", "three"] {
        project.write("app/main.py", &format!("print('{release}')\n"));
        let run = project.layer(&base, &image, &[], &[DEBUG]).success();
        assert!(
            !run.stderr.contains("opening upload sessions ahead"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        private.requests_containing("/blobs/uploads/ HTTP/1.1\" 401 "),
        0,
        "an upload session was asked for without credentials"
    );
    assert!(
        sessions_opened(&private, "acme/web") > 0,
        "the log shows no upload at all"
    );
}

/// A deploy that fails after its sessions were opened ahead (here its base
/// fails to build) leaves no upload open in the registry.
#[test]
fn a_deploy_that_fails_leaves_no_upload_open() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let project = build_project(&registry, &from);
    let image = format!("{}/acme/web:live", registry.host());
    build(&project, &image);

    project.write("app/main.py", "print('never deployed')\n");
    let config = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    let broken = config
        .lines()
        .map(|line| match line.starts_with("install = ") {
            true => "install = \"echo the install fails >&2; exit 7\"",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    project.write("cachectl.toml", &broken);
    let (opened, cancelled) = (
        sessions_opened(&registry, "acme/web"),
        sessions_cancelled(&registry, "acme/web"),
    );
    let failed = project.cachectl(
        &["build", "--json", "--app-image", &image, "--context", "app"],
        &[DEBUG],
    );
    assert_ne!(failed.code, 0, "the broken install went through");
    assert_eq!(
        sessions_opened(&registry, "acme/web") - opened,
        2,
        "{}",
        failed.stderr
    );
    assert_eq!(
        sessions_cancelled(&registry, "acme/web") - cancelled,
        2,
        "{}",
        failed.stderr
    );
    assert_eq!(
        open_uploads(&registry, "acme/web"),
        0,
        "an upload was left open"
    );
}
