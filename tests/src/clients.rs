//! The real third-party cache clients the suites drive: `ccache` (Debian),
//! `turbo` and `nx` (npm, installed by `scripts/install-test-deps`), each
//! with a minimal project of its own and the environment it reads.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A client's success and its stdout and stderr as one text.
fn outcome(output: &std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs Debian's `ccache` with `args` in `work`, its cache in `dir` and
/// `remote` as its remote storage.
pub fn ccache(dir: &Path, work: &Path, remote: &str, args: &[&str]) -> std::process::Output {
    Command::new("ccache")
        .args(args)
        .current_dir(work)
        .env("CCACHE_DIR", dir)
        .env("CCACHE_REMOTE_STORAGE", remote)
        .env("CCACHE_NOHASHDIR", "1")
        .env_remove("CCACHE_CONFIGPATH")
        .output()
        .expect("ccache runs (scripts/install-test-deps)")
}

/// One counter of `ccache --print-stats`.
pub fn ccache_stat(dir: &Path, work: &Path, remote: &str, name: &str) -> u64 {
    let output = ccache(dir, work, remote, &["--print-stats"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('\t')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in ccache --print-stats"))
}

/// The `node_modules` folder of an npm tool installed by
/// `scripts/install-test-deps`.
pub fn npm_tool(name: &str) -> PathBuf {
    let deps = std::env::var_os("CACHECTL_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/cachectl-test-deps")
        });
    let modules = deps.join(name).join("node_modules");
    assert!(
        modules.join(".bin").join(name).exists(),
        "{name} is not installed: run scripts/install-test-deps"
    );
    modules
}

/// The `turbo` executable.
pub fn turbo_binary() -> PathBuf {
    npm_tool("turbo").join(".bin/turbo")
}

/// A two-package npm workspace whose `build` writes `dist/out.txt`.
pub fn turbo_workspace(root: &Path) {
    turbo_workspace_with(root, |name| {
        format!(
            "node -e \"require('fs').mkdirSync('dist',{{recursive:true}});require('fs').writeFileSync('dist/out.txt','built {name}')\""
        )
    });
}

/// A two-package (`a`, `b`) npm workspace whose packages build with
/// `script(name)`.
pub fn turbo_workspace_with(root: &Path, script: impl Fn(&str) -> String) {
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"ws","private":true,"packageManager":"npm@10.0.0","workspaces":["packages/*"]}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("turbo.json"),
        r#"{"tasks":{"build":{"outputs":["dist/**"]}}}"#,
    )
    .unwrap();
    let mut lock_packages =
        serde_json::json!({ "": { "name": "ws", "workspaces": ["packages/*"] } });
    for name in ["a", "b"] {
        let folder = root.join("packages").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let script = script(name);
        let manifest =
            serde_json::json!({ "name": name, "version": "1.0.0", "scripts": { "build": script } });
        std::fs::write(folder.join("package.json"), manifest.to_string()).unwrap();
        lock_packages[format!("packages/{name}")] =
            serde_json::json!({ "name": name, "version": "1.0.0" });
        lock_packages[format!("node_modules/{name}")] =
            serde_json::json!({ "resolved": format!("packages/{name}"), "link": true });
    }
    let lock = serde_json::json!({ "name": "ws", "lockfileVersion": 3, "requires": true, "packages": lock_packages });
    std::fs::write(root.join("package-lock.json"), lock.to_string()).unwrap();
}

/// Runs `turbo run build` in `root`, its local cache in `root/../local-cache`.
pub fn turbo(root: &Path, api: &str, token: &str) -> (bool, String) {
    turbo_filtered(root, api, token, &[])
}

/// Runs `turbo run build` with `args` (e.g. `--filter=a`).
pub fn turbo_filtered(root: &Path, api: &str, token: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(turbo_binary())
        .args(["run", "build"])
        .args(args)
        .current_dir(root)
        .env("TURBO_API", api)
        .env("TURBO_TOKEN", token)
        .env("TURBO_TEAM", "acme")
        .env("TURBO_TELEMETRY_DISABLED", "1")
        .env("DO_NOT_TRACK", "1")
        .env("TURBO_NO_UPDATE_NOTIFIER", "1")
        .env("TURBO_CACHE_DIR", local_cache(root))
        .output()
        .expect("turbo runs");
    outcome(&output)
}

/// Turborepo's local cache folder of the workspace `root`.
pub fn local_cache(root: &Path) -> PathBuf {
    root.parent().unwrap_or(root).join("local-cache")
}

/// An Nx workspace with one cached `build` target writing `app/dist/out.txt`.
pub fn nx_workspace(root: &Path) {
    let command = "node -e \"require('fs').mkdirSync('app/dist',{recursive:true});require('fs').writeFileSync('app/dist/out.txt','built')\"";
    nx_workspace_with(root, &[("app", command.to_owned())]);
}

/// An Nx workspace with `projects` (name, build command), each a cached
/// `build` target whose output is `{name}/dist`.
pub fn nx_workspace_with(root: &Path, projects: &[(&str, String)]) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("package.json"), r#"{"name":"ws","private":true}"#).unwrap();
    std::fs::write(
        root.join("nx.json"),
        r#"{"targetDefaults":{"build":{"cache":true}}}"#,
    )
    .unwrap();
    for (name, command) in projects {
        std::fs::create_dir_all(root.join(name)).unwrap();
        let project = serde_json::json!({
            "name": name,
            "targets": { "build": { "command": command, "cache": true, "outputs": ["{projectRoot}/dist"] } }
        });
        std::fs::write(root.join(name).join("project.json"), project.to_string()).unwrap();
    }
    // Nx loads itself from the workspace's node_modules.
    std::os::unix::fs::symlink(npm_tool("nx"), root.join("node_modules")).unwrap();
}

/// Runs `nx run app:build` against the self-hosted cache `server`.
pub fn nx(root: &Path, server: &str, token: &str, local_cache: &Path) -> (bool, String) {
    nx_target(root, "app:build", server, token, local_cache)
}

/// Runs `nx run {target}` against the self-hosted cache `server`.
pub fn nx_target(
    root: &Path,
    target: &str,
    server: &str,
    token: &str,
    local_cache: &Path,
) -> (bool, String) {
    let output = Command::new(root.join("node_modules/.bin/nx"))
        .args(["run", target])
        .current_dir(root)
        .env("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", server)
        .env("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN", token)
        .env("NX_CACHE_DIRECTORY", local_cache)
        .env("NX_DAEMON", "false")
        .env("NX_NO_CLOUD", "true")
        .env("NX_TUI", "false")
        .env("NX_SKIP_NX_CACHE", "false")
        // Nx copies its 17 MB native module to `$TMPDIR/nx-native-file-cache-*`
        // and never removes it: keep it beside the workspace, which the
        // test's temporary folder removes.
        .env(
            "NX_NATIVE_FILE_CACHE_DIRECTORY",
            root.with_extension("nx-native"),
        )
        .output()
        .expect("nx runs");
    outcome(&output)
}

/// A C++ workspace for Debian's Bazel: a `cc_library`, a `cc_binary` on it
/// and a genrule that runs the binary (`//:banner`, four actions), with
/// local stand-ins for `@rules_cc` and `@rules_java` (Bazel 4 downloads
/// them otherwise, and nothing is downloadable here) next to it. Returns
/// the `--override_repository` flags that use the stand-ins.
pub fn bazel_cc_workspace(workspace: &Path) -> Vec<String> {
    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
        std::fs::write(&path, text).expect("a workspace file");
    };
    write(workspace.join("WORKSPACE"), "");
    write(
        workspace.join("BUILD"),
        "cc_library(name = \"greet\", srcs = [\"greet.cc\"], hdrs = [\"greet.h\"])\n\
         cc_binary(name = \"hello\", srcs = [\"main.cc\"], deps = [\":greet\"])\n\
         genrule(name = \"banner\", srcs = [\":hello\"], outs = [\"banner.txt\"], \
         cmd = \"$(location :hello) > $@\")\n",
    );
    write(
        workspace.join("greet.h"),
        "#include <string>\nstd::string greeting();\n",
    );
    write(
        workspace.join("greet.cc"),
        "#include \"greet.h\"\nstd::string greeting() { return \"hello from a cached build\"; }\n",
    );
    bazel_main(workspace, "hello");
    let stand_ins = workspace.with_extension("rules");
    let rules = |repository: &str, package: &str, names: &[&str]| {
        let root = stand_ins.join(repository);
        write(root.join("WORKSPACE"), "");
        write(root.join(package).join("BUILD"), "");
        let mut defs = format!("\"\"\"A stand-in for @{repository}: the native rules.\"\"\"\n");
        for name in names {
            defs.push_str(&format!(
                "def {name}(**kwargs):\n    native.{name}(**kwargs)\n"
            ));
        }
        write(root.join(package).join("defs.bzl"), &defs);
        format!("--override_repository={repository}={}", root.display())
    };
    vec![
        rules(
            "rules_cc",
            "cc",
            &[
                "cc_binary",
                "cc_library",
                "cc_test",
                "cc_import",
                "cc_proto_library",
                "cc_toolchain",
                "cc_toolchain_suite",
                "fdo_profile",
                "fdo_prefetch_hints",
                "objc_library",
                "objc_import",
            ],
        ),
        rules(
            "rules_java",
            "java",
            &[
                "java_binary",
                "java_import",
                "java_library",
                "java_runtime",
                "java_test",
                "java_toolchain",
            ],
        ),
    ]
}

/// Adds `count` more libraries to a [`bazel_cc_workspace`] and a binary
/// `//:many` on all of them (`count` + 1 more actions): a workspace of a
/// size whose cache traffic can be measured.
pub fn bazel_cc_libraries(workspace: &Path, count: usize) {
    let mut build = std::fs::read_to_string(workspace.join("BUILD")).expect("BUILD");
    let mut main = String::from("#include <iostream>\n");
    let mut calls = String::new();
    for index in 0..count {
        let name = format!("part{index}");
        std::fs::write(
            workspace.join(format!("{name}.cc")),
            format!(
                "#include <string>\nstd::string {name}() {{ return \"{name}: \" + std::to_string({index} * 7); }}\n"
            ),
        )
        .expect("a library source");
        build.push_str(&format!(
            "cc_library(name = \"{name}\", srcs = [\"{name}.cc\"])\n"
        ));
        main.push_str(&format!("std::string {name}();\n"));
        calls.push_str(&format!("  std::cout << {name}() << std::endl;\n"));
    }
    main.push_str(&format!("int main() {{\n{calls}}}\n"));
    std::fs::write(workspace.join("many.cc"), main).expect("many.cc");
    let deps: Vec<String> = (0..count)
        .map(|index| format!("\":part{index}\""))
        .collect();
    build.push_str(&format!(
        "cc_binary(name = \"many\", srcs = [\"many.cc\"], deps = [{}])\n",
        deps.join(", ")
    ));
    std::fs::write(workspace.join("BUILD"), build).expect("BUILD");
}

/// Rewrites the workspace's `main.cc` to print `word` too: the binary and
/// the genrule change, the library does not.
pub fn bazel_main(workspace: &Path, word: &str) {
    std::fs::write(
        workspace.join("main.cc"),
        format!(
            "#include <iostream>\n#include \"greet.h\"\n\
             int main() {{ std::cout << greeting() << \" ({word})\" << std::endl; }}\n"
        ),
    )
    .expect("main.cc");
}

/// How Bazel runs: a new JVM per command (`--batch`, as the suites run it)
/// or a Bazel server kept between commands (a developer's machine, a
/// persistent CI worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BazelMode {
    /// `--batch`.
    Batch,
    /// A Bazel server per output base, stopped by [`bazel_shutdown`].
    Server,
}

fn bazel_command(workspace: &Path, output_root: &Path, mode: BazelMode) -> Command {
    let mut command = Command::new("bazel");
    if mode == BazelMode::Batch {
        command.arg("--batch");
    }
    command
        .arg(format!("--output_user_root={}", output_root.display()))
        .current_dir(workspace)
        .env("HOME", output_root);
    command
}

/// Runs `bazel build {targets}` with `flags` in `workspace`, its output
/// base under `output_root` (a fresh one is a fresh CI machine), actions
/// unsandboxed, in batch mode. Returns success and the combined output.
pub fn bazel_build(
    workspace: &Path,
    output_root: &Path,
    targets: &[&str],
    flags: &[String],
) -> (bool, String) {
    bazel_build_in(BazelMode::Batch, workspace, output_root, targets, flags)
}

/// [`bazel_build`] in `mode`.
pub fn bazel_build_in(
    mode: BazelMode,
    workspace: &Path,
    output_root: &Path,
    targets: &[&str],
    flags: &[String],
) -> (bool, String) {
    let output = bazel_command(workspace, output_root, mode)
        .arg("build")
        .args(targets)
        .args(["--spawn_strategy=standalone", "--noshow_progress"])
        .args(flags)
        .output()
        .expect("bazel runs (bazel-bootstrap, scripts/install-test-deps)");
    outcome(&output)
}

/// Runs `bazel clean` in `workspace` with the output base under
/// `output_root`, in `mode`.
pub fn bazel_clean(mode: BazelMode, workspace: &Path, output_root: &Path) {
    let output = bazel_command(workspace, output_root, mode)
        .arg("clean")
        .output()
        .expect("bazel runs");
    assert!(output.status.success(), "bazel clean failed");
}

/// Stops the Bazel server of the output base under `output_root`.
pub fn bazel_shutdown(workspace: &Path, output_root: &Path) {
    let _ = bazel_command(workspace, output_root, BazelMode::Server)
        .arg("shutdown")
        .output();
}

/// Runs Debian's Bazel (`bazel-bootstrap`, 4.2.3) in `workspace`: `bazel
/// build {targets}` against the HTTP cache `remote` (a URL, its path the
/// namespace prefix), sending `token` as a bearer token, with its own
/// output base in `output_root` (a fresh one is a fresh CI machine).
/// Actions run without the sandbox, so a genrule may read a file outside
/// the workspace: an input Bazel does not hash, as in a cache-poisoning
/// attack. Returns success and the combined output.
pub fn bazel(
    workspace: &Path,
    output_root: &Path,
    remote: &str,
    token: &str,
    targets: &[&str],
) -> (bool, String) {
    let flags = [
        "--nosandbox_debug".to_owned(),
        format!("--remote_cache={remote}"),
        format!("--remote_header=Authorization=Bearer {token}"),
    ];
    bazel_build(workspace, output_root, targets, &flags)
}

/// Runs Debian's Gradle (4.4.1) `tasks` in `project` with the HTTP build
/// cache at `url` (Basic auth, the token as password), pushing, its
/// user home in `home`, and `PAYLOAD` set to `payload` (a file a task may
/// read without declaring it: an input Gradle does not hash).
pub fn gradle(
    project: &Path,
    home: &Path,
    url: &str,
    token: &str,
    payload: &Path,
    tasks: &[&str],
) -> (bool, String) {
    let output = Command::new("gradle")
        .args(["--build-cache", "--no-daemon", "--console=plain"])
        .args(tasks)
        .current_dir(project)
        .env("GRADLE_USER_HOME", home)
        .env("CACHE_URL", url)
        .env("CACHE_TOKEN", token)
        .env("PAYLOAD", payload)
        .output()
        .expect("gradle runs (Debian's gradle, scripts/install-test-deps)");
    outcome(&output)
}

/// A Gradle project with two cacheable tasks: `make` writes
/// `build/make.txt` from the file `$PAYLOAD` (not declared as an input),
/// `other` writes `build/other.txt`. The remote build cache is the one
/// `$CACHE_URL` names; the local one is off.
pub fn gradle_project(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("settings.gradle"),
        r#"rootProject.name = 'app'
buildCache {
  local { enabled = false }
  remote(HttpBuildCache) {
    url = System.getenv('CACHE_URL')
    push = true
    credentials { username = 'ci'; password = System.getenv('CACHE_TOKEN') }
  }
}
"#,
    )
    .unwrap();
    std::fs::write(
        root.join("build.gradle"),
        r#"@CacheableTask
class Make extends DefaultTask {
  @Input String label = "make"
  @OutputFile File out = project.file("build/make.txt")
  @TaskAction void run() { out.text = new File(System.getenv('PAYLOAD')).text }
}
@CacheableTask
class Other extends DefaultTask {
  @Input String label = "other"
  @OutputFile File out = project.file("build/other.txt")
  @TaskAction void run() { out.text = "other" }
}
task make(type: Make)
task other(type: Other)
"#,
    )
    .unwrap();
}
