//! A pull request cannot poison main: the cache-poisoning attack of Nx's
//! CVE-2025-36852 ("CREEP") played with every real client that runs here.
//!
//! One server: auth required, `--namespace-fallback 'pr-*=main'`, a token
//! for main's CI (writes `main`) and one for pull request 42 (writes
//! `pr-42`, reads `main`). Each client's project has a task whose output
//! comes from a file the client does not hash, so the pull request computes
//! main's key while producing its own bytes. For every client:
//!
//! 1. the pull request builds with the poison, first, in its namespace;
//! 2. a fresh pull-request run restores the poison from the server (the
//!    control: the entry is real and restorable);
//! 3. the pull request points the client at main's namespace: its writes
//!    are refused (403), its build still succeeds;
//! 4. main, on a fresh machine, builds the same task: it never restores the
//!    poison (it builds, and its output is the honest one) and builds a
//!    second task;
//! 5. a fresh pull-request run gets the second task from main's entries
//!    through the fallback.

use std::path::{Path, PathBuf};

use cachectl_e2e::clients::{
    bazel, ccache_stat, gradle, gradle_project, local_cache, nx_target, nx_workspace_with,
    turbo_filtered, turbo_workspace_with,
};
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};

const HONEST: &str = "honest";
const POISON: &str = "poisoned";

/// The shared server and the two CI identities.
struct Team {
    server: CacheServer,
    main: String,
    pr: String,
    work: tempfile::TempDir,
}

impl Team {
    fn start() -> Self {
        let server = CacheServer::start(
            Backend::Local,
            ServerOptions::args(&["--auth", "required", "--namespace-fallback", "pr-*=main"]),
        );
        let main = server.create_token("write", "main-ci", &["--write-namespace", "main"]);
        // Its requests that name no namespace read main and write nowhere:
        // a client that dropped the /ns/pr-42 prefix would store nothing,
        // and the control step below would fail.
        let pr = server.create_token(
            "write",
            "pr-42-ci",
            &[
                "--write-namespace",
                "pr-42",
                "--read-namespace",
                "main",
                "--default-namespace",
                "main",
            ],
        );
        Self {
            server,
            main,
            pr,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// A token for pull request `number` as a CI would hold it: writes
    /// `pr-{number}`, reads main.
    fn pull_request_token(&self, number: u32) -> String {
        let namespace = format!("pr-{number}");
        self.server.create_token(
            "write",
            &format!("{namespace}-ci"),
            &["--write-namespace", &namespace, "--read-namespace", "main"],
        )
    }

    /// The server's URL with a namespace prefix.
    fn url(&self, namespace: &str) -> String {
        format!("{}/ns/{namespace}", self.server.base_url())
    }

    /// A file holding `content`, outside any project (not hashed).
    fn payload(&self, content: &str) -> PathBuf {
        let path = self.work.path().join("payload");
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A fresh folder under the work folder.
    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.work.path().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Tokens never reach the log.
    fn check_logs(&self) {
        let logs = self.server.logs();
        assert!(!logs.contains(&self.main) && !logs.contains(&self.pr));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn bazel_main_never_restores_a_pull_request_entry() {
    let team = Team::start();
    let workspace = team.fresh("ws");
    let payload = team.work.path().join("payload");
    std::fs::write(workspace.join("WORKSPACE"), "").unwrap();
    std::fs::write(
        workspace.join("BUILD"),
        format!(
            "genrule(name = \"app\", outs = [\"app.txt\"], cmd = \"cat {} > $@\")\n\
             genrule(name = \"other\", outs = [\"other.txt\"], cmd = \"echo other > $@\")\n",
            payload.display()
        ),
    )
    .unwrap();
    let build = |machine: &str, namespace: &str, token: &str, targets: &[&str]| {
        let (ok, log) = bazel(
            &workspace,
            &team.fresh(machine),
            &team.url(namespace),
            token,
            targets,
        );
        assert!(ok, "{log}");
        log
    };

    team.payload(POISON);
    let log = build("pr-1", "pr-42", &team.pr, &["//:app"]);
    assert!(log.contains("1 local"), "{log}");
    team.payload(HONEST);
    let log = build("pr-2", "pr-42", &team.pr, &["//:app"]);
    assert!(log.contains("1 remote cache hit"), "control: {log}");
    assert_eq!(read(&workspace.join("bazel-bin/app.txt")), POISON);

    // Aimed at main's namespace: the uploads are refused, the build is not.
    team.payload(POISON);
    build("pr-3", "main", &team.pr, &["//:app"]);

    team.payload(HONEST);
    let log = build("main-1", "main", &team.main, &["//:app", "//:other"]);
    assert!(!log.contains("remote cache hit"), "{log}");
    assert_eq!(read(&workspace.join("bazel-bin/app.txt")), HONEST);

    let log = build("pr-4", "pr-42", &team.pr, &["//:other"]);
    assert!(
        log.contains("1 remote cache hit"),
        "fallback to main: {log}"
    );
    assert_eq!(read(&workspace.join("bazel-bin/other.txt")), "other\n");
    team.check_logs();
}

#[test]
fn gradle_main_never_restores_a_pull_request_entry() {
    let team = Team::start();
    let project = team.fresh("app");
    gradle_project(&project);
    let build = |home: &str, namespace: &str, token: &str, payload: &Path, tasks: &[&str]| {
        let _ = std::fs::remove_dir_all(project.join("build"));
        let _ = std::fs::remove_dir_all(project.join(".gradle"));
        let url = format!("{}/cache/", team.url(namespace));
        let (ok, log) = gradle(&project, &team.fresh(home), &url, token, payload, tasks);
        assert!(ok, "{log}");
        log
    };

    let poison = team.payload(POISON);
    let log = build("pr-1", "pr-42", &team.pr, &poison, &["make"]);
    assert!(log.contains("1 executed"), "{log}");
    let honest = team.payload(HONEST);
    let log = build("pr-2", "pr-42", &team.pr, &honest, &["make"]);
    assert!(log.contains("make FROM-CACHE"), "control: {log}");
    assert_eq!(read(&project.join("build/make.txt")), POISON);

    // Aimed at main's namespace: Gradle's push is refused; the build goes on.
    let poison = team.payload(POISON);
    build("pr-3", "main", &team.pr, &poison, &["make"]);

    let honest = team.payload(HONEST);
    let log = build("main-1", "main", &team.main, &honest, &["make", "other"]);
    assert!(!log.contains("FROM-CACHE"), "{log}");
    assert_eq!(read(&project.join("build/make.txt")), HONEST);

    let log = build("pr-4", "pr-42", &team.pr, &honest, &["other"]);
    assert!(log.contains("other FROM-CACHE"), "fallback to main: {log}");
    team.check_logs();
}

#[test]
fn turborepo_main_never_restores_a_pull_request_entry() {
    let team = Team::start();
    let root = team.fresh("ws");
    let payload = team.work.path().join("payload");
    turbo_workspace_with(&root, |name| {
        let content = if name == "a" {
            format!("require('fs').readFileSync('{}','utf8')", payload.display())
        } else {
            format!("'built {name}'")
        };
        format!(
            "node -e \"require('fs').mkdirSync('dist',{{recursive:true}});require('fs').writeFileSync('dist/out.txt',{content})\""
        )
    });
    let build = |namespace: &str, token: &str, filter: &str| {
        for path in [local_cache(&root), root.join(".turbo")] {
            let _ = std::fs::remove_dir_all(path);
        }
        for name in ["a", "b"] {
            let _ = std::fs::remove_dir_all(root.join("packages").join(name).join("dist"));
            let _ = std::fs::remove_dir_all(root.join("packages").join(name).join(".turbo"));
        }
        let (ok, log) = turbo_filtered(&root, &team.url(namespace), token, &[filter]);
        assert!(ok, "{log}");
        log
    };
    let out = |name: &str| read(&root.join("packages").join(name).join("dist/out.txt"));

    team.payload(POISON);
    let log = build("pr-42", &team.pr, "--filter=a");
    assert!(log.contains("0 cached, 1 total"), "{log}");
    team.payload(HONEST);
    let log = build("pr-42", &team.pr, "--filter=a");
    assert!(log.contains("1 cached, 1 total"), "control: {log}");
    assert_eq!(out("a"), POISON);

    team.payload(POISON);
    build("main", &team.pr, "--filter=a");

    team.payload(HONEST);
    let log = build("main", &team.main, "--filter=*");
    assert!(log.contains("0 cached, 2 total"), "{log}");
    assert_eq!(out("a"), HONEST);

    let log = build("pr-42", &team.pr, "--filter=b");
    assert!(log.contains("1 cached, 1 total"), "fallback to main: {log}");
    assert_eq!(out("b"), "built b");
    team.check_logs();
}

#[test]
fn nx_main_never_restores_a_pull_request_entry() {
    let team = Team::start();
    let root = team.fresh("ws");
    let payload = team.work.path().join("payload");
    let command = |name: &str, content: String| {
        format!(
            "node -e \"require('fs').mkdirSync('{name}/dist',{{recursive:true}});require('fs').writeFileSync('{name}/dist/out.txt',{content})\""
        )
    };
    nx_workspace_with(
        &root,
        &[
            (
                "app",
                command(
                    "app",
                    format!("require('fs').readFileSync('{}','utf8')", payload.display()),
                ),
            ),
            ("lib", command("lib", "'built lib'".to_owned())),
        ],
    );
    let build = |local: &str, namespace: &str, token: &str, target: &str| {
        for name in ["app", "lib"] {
            let _ = std::fs::remove_dir_all(root.join(name).join("dist"));
        }
        let _ = std::fs::remove_dir_all(root.join(".nx"));
        let (ok, log) = nx_target(
            &root,
            target,
            &team.url(namespace),
            token,
            &team.fresh(local),
        );
        assert!(ok, "{log}");
        log
    };

    team.payload(POISON);
    let log = build("pr-1", "pr-42", &team.pr, "app:build");
    assert!(!log.contains("from the cache"), "{log}");
    team.payload(HONEST);
    let log = build("pr-2", "pr-42", &team.pr, "app:build");
    assert!(log.contains("from the cache"), "control: {log}");
    assert_eq!(read(&root.join("app/dist/out.txt")), POISON);

    team.payload(POISON);
    build("pr-3", "main", &team.pr, "app:build");

    team.payload(HONEST);
    let log = build("main-1", "main", &team.main, "app:build");
    assert!(!log.contains("from the cache"), "{log}");
    assert_eq!(read(&root.join("app/dist/out.txt")), HONEST);
    build("main-2", "main", &team.main, "lib:build");

    let log = build("pr-4", "pr-42", &team.pr, "lib:build");
    assert!(log.contains("from the cache"), "fallback to main: {log}");
    assert_eq!(read(&root.join("lib/dist/out.txt")), "built lib");
    team.check_logs();
}

#[test]
fn ccache_main_never_restores_a_pull_request_entry() {
    let team = Team::start();
    let work = team.fresh("src");
    std::fs::write(
        work.join("value.c"),
        "#ifdef POISONED\nint value(void) { return 666; }\n#else\nint value(void) { return 42; }\n#endif\n",
    )
    .unwrap();
    std::fs::write(work.join("other.c"), "int other(void) { return 7; }\n").unwrap();
    // The pull request's compiler prefix (not part of ccache's key) adds a
    // definition: its object differs while its key is main's.
    let prefix = team.work.path().join("evil-prefix");
    std::fs::write(&prefix, "#!/bin/sh\nexec \"$@\" -DPOISONED\n").unwrap();
    std::fs::set_permissions(&prefix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let remote = |namespace: &str, token: &str| {
        team.url(namespace)
            .replacen("http://", &format!("http://ci:{token}@"), 1)
            + "/ccache"
    };
    let compile = |dir: &str, remote: &str, source: &str, evil: bool| -> Vec<u8> {
        let dir = team.fresh(dir);
        let mut command = std::process::Command::new("ccache");
        command
            .args(["gcc", "-c", source, "-o", "out.o"])
            .current_dir(&work)
            .env("CCACHE_DIR", &dir)
            .env("CCACHE_REMOTE_STORAGE", remote)
            .env("CCACHE_NOHASHDIR", "1")
            .env_remove("CCACHE_CONFIGPATH");
        if evil {
            command.env("CCACHE_PREFIX", &prefix);
        }
        let output = command.output().expect("ccache runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read(work.join("out.o")).unwrap()
    };
    let direct = |extra: &[&str]| -> Vec<u8> {
        let output = std::process::Command::new("gcc")
            .args(["-c", "value.c", "-o", "direct.o"])
            .args(extra)
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(output.status.success());
        std::fs::read(work.join("direct.o")).unwrap()
    };
    let (honest, poisoned) = (direct(&[]), direct(&["-DPOISONED"]));
    assert_ne!(honest, poisoned);
    let hits = |dir: &str, remote: &str| {
        ccache_stat(
            &team.work.path().join(dir),
            &work,
            remote,
            "remote_storage_hit",
        )
    };

    let pr = remote("pr-42", &team.pr);
    assert_eq!(compile("pr-1", &pr, "value.c", true), poisoned);
    assert_eq!(compile("pr-2", &pr, "value.c", false), poisoned, "control");
    assert_eq!(hits("pr-2", &pr), 1);

    let aimed = remote("main", &team.pr);
    compile("pr-3", &aimed, "value.c", true);

    let main = remote("main", &team.main);
    assert_eq!(compile("main-1", &main, "value.c", false), honest);
    assert_eq!(hits("main-1", &main), 0);
    compile("main-1", &main, "other.c", false);

    compile("pr-4", &pr, "other.c", false);
    assert_eq!(hits("pr-4", &pr), 1, "fallback to main");
    team.check_logs();
}

/// The environment of a GitHub Actions job for pull request `number`.
fn github_pull_request(number: u32) -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_EVENT_NAME", "pull_request".into()),
        ("GITHUB_REF", format!("refs/pull/{number}/merge")),
    ]
}

/// The environment of a GitHub Actions push to `main` (no event payload:
/// `main` is taken as the default branch).
fn github_push_to_main() -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_EVENT_NAME", "push".into()),
        ("GITHUB_REF", "refs/heads/main".into()),
    ]
}

fn env_of<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

/// The tags of a registry repository, sorted.
fn tags(image: &str) -> Vec<String> {
    let output = std::process::Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut tags: Vec<String> = listed["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

/// The manifest digest a registry reference resolves to.
fn digest_of(reference: &str) -> serde_json::Value {
    cachectl_e2e::registry::skopeo_inspect(&format!("docker://{reference}"), false)["Digest"]
        .clone()
}

#[test]
fn cachectl_bases_of_a_pull_request_are_never_main_s() {
    use cachectl_e2e::cachectl::Project;
    use cachectl_e2e::registry::RegistryServer;
    let team = Team::start();
    let other_pr = team.pull_request_token(7);
    let registry = RegistryServer::start();
    let image = format!("{}/acme/api-base", registry.host());
    let payload = team.work.path().join("payload");
    let project = Project::new();
    project.write("requirements.txt", "flask==3.0.3\n");
    project.write(
        "cachectl.toml",
        &format!(
            r#"cache = "{cache}"
[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "native"
install = "echo built >> {marker} && mkdir -p {{out}}/opt && cat {payload} > {{out}}/opt/payload"
platform = "linux/amd64"
tag = "latest"
"#,
            cache = team.server.base_url(),
            marker = project.marker().display(),
            payload = payload.display(),
        ),
    );
    let ensure = |token: &str, ci: &[(&'static str, String)]| {
        let mut env = env_of(ci);
        env.push(("CACHECTL_CACHE_TOKEN", token));
        project
            .cachectl(&["ensure-base", "--json", "--require-cache"], &env)
            .success()
    };

    // The pull request builds first, with its own bytes, under its own tag,
    // and does not move `latest`.
    team.payload(POISON);
    let pr = ensure(&team.pr, &github_pull_request(42));
    let pr_json = pr.json();
    assert_eq!(pr_json["source"], "built");
    let key16 = &pr_json["key"].as_str().unwrap()[..16];
    assert_eq!(tags(&image), vec![format!("base-{key16}-pr-42")]);
    assert_eq!(
        digest_of(&format!("{image}:base-{key16}-pr-42")),
        pr_json["digest"]
    );
    assert!(
        pr.stderr.contains("not moving the tag latest"),
        "{}",
        pr.stderr
    );

    // Main computes the same key: it builds its own, never prints the
    // pull request's.
    team.payload(HONEST);
    let main = ensure(&team.main, &github_push_to_main()).json();
    assert_eq!(main["source"], "built", "{main}");
    assert_eq!(main["key"], pr_json["key"]);
    assert_ne!(main["digest"], pr_json["digest"]);
    assert_eq!(digest_of(&format!("{image}:base-{key16}")), main["digest"]);
    assert_eq!(digest_of(&format!("{image}:latest")), main["digest"]);
    let again = ensure(&team.main, &github_push_to_main()).json();
    assert_eq!(
        (&again["source"], &again["digest"]),
        (&"cache".into(), &main["digest"])
    );

    // The pull request keeps finding its own; another one starts from main's.
    let pr_again = ensure(&team.pr, &github_pull_request(42)).json();
    assert_eq!(pr_again["digest"], pr_json["digest"], "{pr_again}");
    let seven = ensure(&other_pr, &github_pull_request(7)).json();
    assert_eq!(seven["digest"], main["digest"], "{seven}");
    assert_eq!(seven["source"], "registry");
    assert_eq!(project.builds(), 2);
    team.check_logs();
}

/// The tags of an OCI layout's images, sorted.
fn layout_tags(layout: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags
}

/// `pull_request_target`, `workflow_run` and `issue_comment` jobs run on
/// the default branch (`GITHUB_REF=refs/heads/main`) for a pull request's
/// input: `ensure-base` publishes their bases under their own names, says
/// why, and never moves the moving tag; main's push then builds its own.
/// On a registry and on an OCI layout, with no cache server.
#[test]
fn cachectl_jobs_of_events_on_main_for_a_pull_request_never_publish_as_main() {
    use cachectl_e2e::cachectl::Project;
    use cachectl_e2e::registry::RegistryServer;
    let registry = RegistryServer::start();
    let layout = tempfile::tempdir().unwrap();
    let targets = [
        (format!("{}/acme/api-base", registry.host()), None),
        (
            format!("oci:{}:latest", layout.path().display()),
            Some(layout.path()),
        ),
    ];
    for (image, layout) in targets {
        let project = Project::native(&image, None);
        if layout.is_none() {
            project.append("cachectl.toml", "tag = \"latest\"\n");
        }
        let tags = || match layout {
            Some(layout) => layout_tags(layout),
            None => tags(&image),
        };
        let event = |name: &str, payload: &str| {
            let path = project.path().join(format!("{name}.json"));
            std::fs::write(
                &path,
                format!(r#"{{"repository": {{"default_branch": "main"}}, {payload}}}"#),
            )
            .unwrap();
            let path = path.display().to_string();
            let env = [
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_EVENT_NAME", name),
                ("GITHUB_REF", "refs/heads/main"),
                ("GITHUB_EVENT_PATH", path.as_str()),
            ];
            project.cachectl(&["ensure-base", "--json"], &env).success()
        };

        let target = event("pull_request_target", r#""pull_request": {"number": 42}"#);
        let built = target.json();
        assert_eq!(built["source"], "built", "{image}");
        let key16 = built["key"].as_str().unwrap()[..16].to_owned();
        assert_eq!(tags(), vec![format!("base-{key16}-pr-42")], "{image}");
        for said in [
            "GitHub Actions pull_request_target event on refs/heads/main",
            "cache namespace pr-42, not trusted",
            "not moving the tag latest",
        ] {
            assert!(target.stderr.contains(said), "{image}: {}", target.stderr);
        }

        let run = event(
            "workflow_run",
            r#""workflow_run": {"event": "pull_request", "head_branch": "main", "pull_requests": []}"#,
        );
        assert_eq!(run.json()["source"], "built", "{image}");
        let comment = event(
            "issue_comment",
            r#""issue": {"number": 42, "pull_request": {"url": "x"}}"#,
        );
        assert_eq!(
            comment.json()["digest"],
            built["digest"],
            "{image}: an issue_comment on pull request 42 is its namespace"
        );
        assert_eq!(
            tags(),
            vec![
                format!("base-{key16}-pr-42"),
                format!("base-{key16}-untrusted-workflow_run"),
            ],
            "{image}"
        );

        // Main's own push builds main's base and moves the tag.
        let push = event("push", r#""ref": "refs/heads/main""#).json();
        assert_eq!(push["source"], "built", "{image}");
        assert_eq!(push["key"], built["key"]);
        let mut expected = vec![
            format!("base-{key16}"),
            format!("base-{key16}-pr-42"),
            format!("base-{key16}-untrusted-workflow_run"),
            "latest".to_owned(),
        ];
        expected.sort();
        assert_eq!(tags(), expected, "{image}");
        assert_eq!(project.builds(), 3, "{image}");
    }
}

#[test]
fn cachectl_folder_caches_of_a_pull_request_never_reach_main() {
    use cachectl_e2e::cachectl::{Project, deps_cache_args};
    let team = Team::start();
    let other_pr = team.pull_request_token(7);
    let project = Project::new();
    project.write("lock.txt", "left-pad==1.3.0\n");
    let cache = |verb: &str, token: &str, namespace: &str| {
        let url = team.server.base_url();
        let mut args = vec!["cache", verb, "--json"];
        args.extend(deps_cache_args(&url));
        project
            .cachectl(
                &args,
                &[
                    ("CACHECTL_CACHE_TOKEN", token),
                    ("CACHECTL_NAMESPACE", namespace),
                ],
            )
            .success()
            .json()
    };
    let deps = project.path().join("deps/lib.txt");
    let fill = |content: &str| {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        project.write("deps/lib.txt", content);
    };

    fill(POISON);
    cache("save", &team.pr, "pr-42");
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(
        cache("restore", &team.pr, "pr-42")["hit"],
        "exact",
        "control"
    );
    assert_eq!(read(&deps), POISON);

    // Main's restore of the same key misses (exactly and by name).
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(cache("restore", &team.main, "main")["hit"], "miss");
    assert!(!deps.exists());
    fill(HONEST);
    cache("save", &team.main, "main");

    // A pull request naming main's namespace cannot save there.
    fill(POISON);
    let refused = project.cachectl(
        &[
            &["cache", "save", "--json", "--require-cache"][..],
            &deps_cache_args(&team.server.base_url()),
        ]
        .concat(),
        &[
            ("CACHECTL_CACHE_TOKEN", &team.pr),
            ("CACHECTL_NAMESPACE", "main"),
        ],
    );
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(cache("restore", &team.main, "main")["hit"], "exact");
    assert_eq!(read(&deps), HONEST);

    // Another pull request starts warm from main's.
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(cache("restore", &other_pr, "pr-7")["hit"], "exact");
    assert_eq!(read(&deps), HONEST);
    team.check_logs();
}

/// `--namespace-quota 'pr-*=256KiB'` on the real server: a pull request
/// whose folder caches outgrow its quota loses its own oldest, main's
/// cache stays whole, and stats and metrics show each namespace.
#[tokio::test]
async fn a_pull_request_filling_its_quota_evicts_only_its_own_entries() {
    use cachectl_e2e::cachectl::Project;
    use cachectl_e2e::data::random_bytes;
    let server = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--auth",
            "required",
            "--namespace-fallback",
            "pr-*=main",
            "--namespace-quota",
            "pr-*=256KiB",
        ]),
    );
    let main = server.create_token("write", "main-ci", &["--write-namespace", "main"]);
    let pr = server.create_token(
        "write",
        "pr-42-ci",
        &["--write-namespace", "pr-42", "--read-namespace", "main"],
    );
    let admin = server.create_token("admin", "ops", &[]);
    let project = Project::new();
    project.write("lock.txt", "left-pad==1.3.0\n");
    let url = server.base_url();
    let cache = |verb: &str, name: &str, token: &str, namespace: &str| {
        project
            .cachectl(
                &[
                    "cache",
                    verb,
                    "--json",
                    "--cache",
                    &url,
                    "--name",
                    name,
                    "--key-files",
                    "lock.txt",
                    "--path",
                    "deps",
                ],
                &[
                    ("CACHECTL_CACHE_TOKEN", token),
                    ("CACHECTL_NAMESPACE", namespace),
                ],
            )
            .success()
            .json()
    };
    let fill = |seed: u64| {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        std::fs::create_dir_all(project.path().join("deps")).unwrap();
        std::fs::write(
            project.path().join("deps/lib.bin"),
            random_bytes(100 << 10, seed),
        )
        .unwrap();
    };

    fill(1);
    cache("save", "deps", &main, "main");
    for seed in 10..16 {
        fill(seed);
        cache("save", &format!("deps-{seed}"), &pr, "pr-42");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The newest pull-request cache is whole; main's too.
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(cache("restore", "deps-15", &pr, "pr-42")["hit"], "exact");
    assert_eq!(
        std::fs::read(project.path().join("deps/lib.bin")).unwrap(),
        random_bytes(100 << 10, 15)
    );
    let _ = std::fs::remove_dir_all(project.path().join("deps"));
    assert_eq!(cache("restore", "deps", &main, "main")["hit"], "exact");
    assert_eq!(
        std::fs::read(project.path().join("deps/lib.bin")).unwrap(),
        random_bytes(100 << 10, 1)
    );

    let stats = server.get_json("/v1/stats", Some(&admin)).await;
    let of = |name: &str| {
        stats["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|usage| usage["namespace"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {stats}"))
    };
    let pr_usage = of("pr-42");
    assert_eq!(pr_usage["quota_bytes"], 256 << 10, "{pr_usage}");
    let charged = pr_usage["stored_bytes"].as_u64().unwrap();
    assert!(charged <= 256 << 10, "{pr_usage}");
    assert!(charged >= 100 << 10, "{pr_usage}");
    assert!(of("main")["stored_bytes"].as_u64().unwrap() >= 100 << 10);
    assert!(
        stats["stored"]["evicted_objects"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("cache_namespace_stored_bytes{{namespace=\"pr-42\"}} {charged}");
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    assert!(metrics.contains("cache_namespace_quota_bytes{namespace=\"pr-42\"} 262144"));
}
