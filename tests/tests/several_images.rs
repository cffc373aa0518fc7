//! A project of several images (`[images.NAME]`), like a Go API and a web
//! front end in one repository: one `cachectl build` builds every image's
//! base and app in parallel with one report and CI outputs per image, and
//! a change to one image's lock file rebuilds only that image's base.

use cachectl_e2e::cachectl::{Project, Run, key_values as outputs};
use cachectl_e2e::registry::{RegistryServer, push_busybox, skopeo_inspect};

/// A project of two images, `api` (in `api/`, keyed on `go.sum`) and `web`
/// (in `web/`, keyed on `package-lock.json`), sharing the top-level
/// `[base]` settings. Each install step logs its start and end to the
/// marker and takes a second. `image(name)` is the base (`api-base`,
/// `web-base`) or app (`api`, `web`) image's reference.
fn two_images(shared_base: &str, image: impl Fn(&Project, &str) -> String) -> Project {
    let project = Project::new();
    let image = |name: &str| image(&project, name);
    project.write("api/go.sum", "example.com/dep v1.0.0 h1:abc=\n");
    project.write("api/dist/server", "#!/bin/sh\necho api\n");
    project.write("web/package-lock.json", "{\"lockfileVersion\": 3}\n");
    project.write("web/src/index.html", "<h1>web</h1>\n");
    let marker = project.marker();
    let install = |name: &str, lock: &str| {
        format!(
            "echo start {name} >> {marker} && sleep 1 && echo end {name} >> {marker} && \
             mkdir -p {{out}}/opt/{name} && cp {lock} {{out}}/opt/{name}/",
            marker = marker.display()
        )
    };
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
builder = "native"
platform = "linux/amd64"
{shared_base}

[images.api]
dir = "api"
base = {{ image = "{api_base}", manifests = ["go.sum"], install = "{api_install}" }}
app = {{ image = "{api_app}", context = "dist", cmd = ["/app/server"] }}

[images.web]
dir = "web"
base = {{ image = "{web_base}", manifests = ["package-lock.json"], install = "{web_install}" }}
app = {{ image = "{web_app}", context = "src" }}
"#,
            api_base = image("api-base"),
            web_base = image("web-base"),
            api_app = image("api"),
            web_app = image("web"),
            api_install = install("api", "go.sum"),
            web_install = install("web", "package-lock.json"),
        ),
    );
    project
}

/// The lines of the marker file.
fn marker_lines(project: &Project) -> Vec<String> {
    std::fs::read_to_string(project.marker())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `cachectl build --json` with GitHub's output files.
fn build(project: &Project, github: &tempfile::TempDir, extra: &[&str]) -> Run {
    let output = github.path().join("output");
    let summary = github.path().join("summary");
    let _ = std::fs::remove_file(&output);
    let mut args = vec!["build", "--json"];
    args.extend_from_slice(extra);
    project.cachectl(
        &args,
        &[
            ("GITHUB_OUTPUT", output.to_str().unwrap()),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    )
}

#[test]
fn one_build_makes_both_images_in_parallel_and_a_lock_change_rebuilds_only_its_base() {
    let registry = RegistryServer::start();
    let from = push_busybox(&registry, "library/busybox", "1");
    let host = registry.host();
    // The install steps log to the marker outside the images' folders:
    // they run on the host, on top of the shared `from`.
    let project = two_images(
        &format!("from = \"{from}\"\ninstall_in = \"host\""),
        |_, name| match name.strip_suffix("-base") {
            Some(_) => format!("{host}/acme/{name}"),
            None => format!("{host}/acme/{name}:main"),
        },
    );
    let github = tempfile::tempdir().unwrap();

    let run = build(&project, &github, &[]).success();
    let report = run.json();
    for name in ["api", "web"] {
        let image = &report["images"][name];
        assert_eq!(image["base"]["hit"], false, "{name}: {report}");
        let reference = image["app"]["reference"].as_str().unwrap();
        assert!(
            reference.starts_with(&format!("{host}/acme/{name}@sha256:")),
            "{reference}"
        );
        // Progress is relayed with the image's name in front.
        assert!(run.stderr.contains(&format!("[{name}] ")), "{}", run.stderr);
    }
    assert_eq!(report["failed"], serde_json::json!({}));
    // Both bases were built at once (the machine has the cores for it).
    let lines = marker_lines(&project);
    assert_eq!(lines.len(), 4, "{lines:?}");
    if std::thread::available_parallelism().map_or(1, usize::from) >= 2 {
        assert!(
            lines[0].starts_with("start") && lines[1].starts_with("start"),
            "the bases were built one after the other: {lines:?}"
        );
    }
    // Each image is where its section says, with its own settings.
    let api = skopeo_inspect(&format!("docker://{host}/acme/api:main"), true);
    assert_eq!(api["config"]["Cmd"], serde_json::json!(["/app/server"]));
    skopeo_inspect(&format!("docker://{host}/acme/web:main"), false);
    let written = outputs(&github.path().join("output"));
    assert_eq!(written["api-cache-hit"], "false");
    assert_eq!(written["cache-hit"], "false");
    assert_eq!(
        written["web-image"],
        report["images"]["web"]["app"]["reference"]
            .as_str()
            .unwrap()
    );
    assert!(written["api-base-image"].starts_with(&format!("{host}/acme/api-base@sha256:")));
    let images: serde_json::Value = serde_json::from_str(&written["images"]).unwrap();
    assert_eq!(images["api"], report["images"]["api"]["app"]["reference"]);
    let summary = std::fs::read_to_string(github.path().join("summary")).unwrap();
    assert!(summary.contains("| api | built in"), "{summary}");

    // Only the front end's lock file changes: only its base is rebuilt.
    project.write(
        "web/package-lock.json",
        "{\"lockfileVersion\": 3, \"packages\": {}}\n",
    );
    let run = build(&project, &github, &[]).success();
    let report = run.json();
    assert_eq!(report["images"]["api"]["base"]["hit"], true, "{report}");
    assert_eq!(report["images"]["web"]["base"]["hit"], false, "{report}");
    let lines = marker_lines(&project);
    assert_eq!(&lines[4..], ["start web", "end web"], "{lines:?}");
    let written = outputs(&github.path().join("output"));
    assert_eq!(written["api-cache-hit"], "true");
    assert_eq!(written["web-cache-hit"], "false");
    assert_eq!(written["cache-hit"], "false");

    // --only narrows the run to one image: its own report, as without images.
    let run = project
        .cachectl(&["build", "--json", "--only", "api"], &[])
        .success();
    assert_eq!(run.json()["base"]["hit"], true);
    let run = project
        .cachectl(&["ensure-base", "--json"], &[("CACHECTL_ONLY", "web")])
        .success();
    assert_eq!(run.json()["hit"], true);
    assert_eq!(marker_lines(&project).len(), 6);

    // Commands about one image ask which.
    let hash = project.cachectl(&["hash"], &[]);
    assert_eq!(hash.code, 2, "{}", hash.stderr);
    assert!(
        hash.stderr.contains("api, web") && hash.stderr.contains("--only"),
        "{}",
        hash.stderr
    );
    let explain = project
        .cachectl(&["hash", "--explain", "--json", "--only", "web"], &[])
        .success();
    let names: Vec<String> = explain.json()["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|input| input["kind"] == "manifest")
        .map(|input| input["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["package-lock.json"]);
    let unknown = project.cachectl(&["build", "--only", "db"], &[]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no [images.db]"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn images_built_in_parallel_into_one_oci_layout_keep_every_tag_and_a_failure_is_named() {
    // One layout for both (paths in a section are relative to its `dir`,
    // so this one is absolute).
    let project = two_images("", |project, name| {
        format!("oci:{}/build/oci:{name}", project.path().display())
    });
    let github = tempfile::tempdir().unwrap();
    let run = build(&project, &github, &[]).success();
    let report = run.json();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join("build/oci/index.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| {
            entry["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    for name in ["api", "web"] {
        let base_tag = report["images"][name]["base"]["reference"]
            .as_str()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .1
            .to_owned();
        assert!(
            names.contains(&base_tag) && names.contains(&name.to_owned()),
            "{name}: {names:?}"
        );
    }

    // One image's install fails: the other is still built, the run fails
    // with the failing image named, and the report says which.
    project.write("api/go.sum", "example.com/dep v1.1.0 h1:def=\n");
    project.write("web/package-lock.json", "{\"broken\": true}\n");
    let text = std::fs::read_to_string(project.path().join("cachectl.toml")).unwrap();
    project.write(
        "cachectl.toml",
        &text.replace(
            "echo start web",
            "echo no registry for web >&2 && exit 7 && echo start web",
        ),
    );
    let run = build(&project, &github, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("1 of 2 images failed: web (exit 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[web]   | no registry for web"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["images"]["api"]["base"]["hit"], false);
    assert_eq!(report["failed"]["web"]["code"], 1);
}
