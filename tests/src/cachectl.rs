//! Running the real `cachectl` binary on a throwaway project.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::bins::workspace_binary;

/// A project folder with its own record store and Docker config.
pub struct Project {
    dir: TempDir,
}

/// What one `cachectl` run did.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON (for `--json` runs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the output unless the run exited 0.
    pub fn success(self) -> Self {
        assert_eq!(
            self.code, 0,
            "cachectl failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Project {
    /// An empty project.
    pub fn new() -> Self {
        let project = Self {
            dir: tempfile::tempdir().expect("temporary folder"),
        };
        project.write(".docker/config.json", "{\"auths\": {}}\n");
        project
    }

    /// A project with `requirements.txt` and a `cachectl.toml` naming the
    /// cache server `cache`, a native base `image` whose install step logs
    /// to [`Project::marker`] and takes `build_seconds`, and an app image
    /// `{image}:app` of the whole folder.
    pub fn native_with_cache(image: &str, cache: &str, build_seconds: u32) -> Self {
        let project = Self::new();
        project.write("requirements.txt", "flask==3.0.3\n");
        project.write(
            "cachectl.toml",
            &format!(
                r#"cache = "{cache}"
[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "native"
install = "echo built >> {marker} && sleep {build_seconds} && mkdir -p {{out}}/opt && cp requirements.txt {{out}}/opt/"
platform = "linux/amd64"
[app]
image = "{image}:app"
context = "."
"#,
                marker = project.marker().display()
            ),
        );
        project
    }

    /// A project with `requirements.txt` and a `cachectl.toml` whose
    /// native base `image` starts from `from` (else empty) and whose install
    /// step appends a line to [`Project::marker`], so that tests can count
    /// builder runs. No `[app]` section and no cache server.
    pub fn native(image: &str, from: Option<&str>) -> Self {
        let project = Self::new();
        project.write("requirements.txt", "flask==3.0.3\nrequests==2.32.3\n");
        let from = from
            .map(|f| format!("from = \"{f}\"\n"))
            .unwrap_or_default();
        project.write(
            "cachectl.toml",
            &format!(
                r#"[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "native"
install = "echo built >> {marker} && mkdir -p {{out}}/opt/deps && cp requirements.txt {{out}}/opt/deps/"
platform = "linux/amd64"
{from}"#,
                marker = project.marker().display()
            ),
        );
        project
    }

    /// The project folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating folders).
    pub fn write(&self, relative: &str, content: &str) {
        let path = self.dir.path().join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).expect("creating folders");
        }
        std::fs::write(path, content).expect("writing a project file");
    }

    /// Appends `content` to a project file (e.g. an `[app]` section to
    /// `cachectl.toml`).
    pub fn append(&self, relative: &str, content: &str) {
        let path = self.dir.path().join(relative);
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(content);
        std::fs::write(path, text).expect("writing a project file");
    }

    /// The marker file install steps append to, one line per build.
    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("builds.log")
    }

    /// How many times the builder ran (lines in the marker file).
    pub fn builds(&self) -> usize {
        std::fs::read_to_string(self.marker())
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Runs `cachectl ARGS` in the project with `env` on top of an isolated
    /// environment (records under the project, no Docker credentials).
    pub fn cachectl(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = self.command(args, env).output().expect("cachectl runs");
        Run::from(output)
    }

    /// `cachectl layer --json --base BASE --app-image IMAGE --context app`
    /// followed by `extra`.
    pub fn layer(&self, base: &str, image: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut args = vec![
            "layer",
            "--json",
            "--base",
            base,
            "--app-image",
            image,
            "--context",
            "app",
        ];
        args.extend_from_slice(extra);
        self.cachectl(&args, env)
    }

    /// Runs cachectl like [`Project::cachectl`] and also returns its peak
    /// resident memory in bytes, sampled every 10 ms while it runs.
    pub fn cachectl_peak_rss(&self, args: &[&str], env: &[(&str, &str)]) -> (Run, u64) {
        let child = self
            .command(args, env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cachectl starts");
        let pid = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(crate::process::peak_rss(pid).unwrap_or(0));
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                peak
            })
        };
        let output = child.wait_with_output().expect("cachectl runs");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().expect("the sampler ends");
        (Run::from(output), peak)
    }

    /// Runs another build of cachectl (`binary`, an earlier commit's, for
    /// a comparison in the same run) like [`Project::cachectl`].
    pub fn cachectl_from(&self, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = self
            .command_of(binary, args, env)
            .output()
            .expect("cachectl runs");
        Run::from(output)
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_of(&workspace_binary("cachectl"), args, env)
    }

    fn command_of(&self, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(binary);
        command
            .current_dir(self.dir.path())
            .env("CACHECTL_CACHE_DIR", self.dir.path().join(".cachectl"))
            .env("DOCKER_CONFIG", self.dir.path().join(".docker"))
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            // The namespace is the test's to choose, not the CI running it.
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITLAB_CI")
            .env_remove("CACHECTL_CACHE")
            .env_remove("CACHECTL_NAMESPACE")
            .args(args)
            .envs(env.iter().copied());
        command
    }
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

/// The arguments of the folder cache the tests save and restore:
/// `deps/`, named `deps`, keyed by `lock.txt`, on the cache at `url`.
pub fn deps_cache_args(url: &str) -> [&str; 8] {
    [
        "--cache",
        url,
        "--name",
        "deps",
        "--key-files",
        "lock.txt",
        "--path",
        "deps",
    ]
}

/// The `NAME=VALUE` lines of a file (`$GITHUB_OUTPUT`, `$GITHUB_ENV`, a
/// dotenv report); the last value of a name wins, as CI systems read them.
pub fn key_values(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}
