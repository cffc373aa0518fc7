//! The CI integrations as the CI systems run them: the GitHub Action's
//! steps (`action.yml`) with the inputs a workflow gives and the variables
//! GitHub sets (`GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`, `GITHUB_ENV`,
//! `GITHUB_REF`, ...), and the GitLab CI template's job scripts with
//! GitLab's variables and its dotenv report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cachectl_e2e::bins::workspace_binary;
use cachectl_e2e::cachectl::{Project, key_values as pairs};
use cachectl_e2e::registry::RegistryServer;
use cachectl_e2e::server::CacheServer;
use serde_yaml_ng::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(relative: &str) -> Value {
    let text = std::fs::read_to_string(repository().join(relative)).expect("the file");
    serde_yaml_ng::from_str(&text).expect("valid YAML")
}

/// The names in `${{ inputs.NAME }}` expressions of `text`.
fn input_references(text: &str) -> Vec<String> {
    text.split("${{")
        .skip(1)
        .filter_map(|rest| rest.split("}}").next())
        .filter_map(|expression| expression.trim().strip_prefix("inputs."))
        .map(str::to_owned)
        .collect()
}

/// `text` with `${{ inputs.NAME }}` replaced as GitHub does: the value the
/// workflow's `with:` gives, else the input's default.
fn evaluate(text: &str, action: &Value, with: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_owned();
    for name in input_references(text) {
        let value = with.get(name.as_str()).cloned().unwrap_or_else(|| {
            action["inputs"][name.as_str()]["default"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        out = out.replace(&format!("${{{{ inputs.{name} }}}}"), &value);
    }
    out
}

/// The files GitHub gives a job's steps.
struct Runner {
    folder: tempfile::TempDir,
}

impl Runner {
    fn new() -> Self {
        Self {
            folder: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.folder.path().join(name)
    }

    /// Runs the action's step `index` as GitHub would: its `env:` evaluated
    /// with `with`, the variables of `$GITHUB_ENV` so far, GitHub's own
    /// variables, in its `working-directory`.
    fn step(
        &self,
        action: &Value,
        index: usize,
        with: &BTreeMap<&str, String>,
        github: &[(&str, &str)],
    ) -> Output {
        let step = &action["runs"]["steps"][index];
        let script = step["run"].as_str().expect("a run step");
        let mut command = Command::new("bash");
        command.arg("-c").arg(script);
        if let Some(folder) = step["working-directory"].as_str() {
            command.current_dir(evaluate(folder, action, with));
        }
        for (name, value) in step["env"].as_mapping().into_iter().flatten() {
            let value = evaluate(value.as_str().unwrap_or_default(), action, with);
            command.env(name.as_str().unwrap(), value);
        }
        command.envs(pairs(&self.file("env")));
        command
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_ACTION_PATH", repository())
            .env("GITHUB_ENV", self.file("env"))
            .env("GITHUB_OUTPUT", self.file("output"))
            .env("GITHUB_STEP_SUMMARY", self.file("summary"))
            .env("RUNNER_TEMP", self.folder.path())
            .envs(github.iter().copied());
        // Nothing of the developer's environment decides the result.
        for (name, _) in std::env::vars() {
            if name.starts_with("CACHECTL_") {
                command.env_remove(name);
            }
        }
        command.output().expect("bash runs")
    }
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "the step failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A project whose base and app images are in `registry`.
fn registry_project(registry: &RegistryServer) -> Project {
    let project = Project::native(&format!("{}/acme/base", registry.host()), None);
    project.append(
        "cachectl.toml",
        &format!(
            "[app]\nimage = \"{}/acme/web:main\"\ncontext = \"app\"\n",
            registry.host()
        ),
    );
    project.write("app/main.py", "print('hello')\n");
    project
}

#[test]
fn the_action_declares_every_input_its_steps_use_and_every_output_a_step_writes() {
    let action = yaml("action.yml");
    assert_eq!(action["runs"]["using"], "composite");
    let text = std::fs::read_to_string(repository().join("action.yml")).unwrap();
    for name in input_references(&text) {
        assert!(
            action["inputs"][name.as_str()].is_mapping(),
            "inputs.{name} is used but not declared"
        );
    }
    // Every INPUT_ variable the scripts read is given by the step's env.
    let steps = action["runs"]["steps"].as_sequence().unwrap();
    for step in steps {
        let Some(run) = step["run"].as_str() else {
            continue;
        };
        let script = run
            .replace(['"', '\''], "")
            .replace("$GITHUB_ACTION_PATH/", "");
        let body = std::fs::read_to_string(repository().join(&script))
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        for part in body.split("INPUT_").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            let variable = format!("INPUT_{name}");
            assert!(
                step["env"][variable.as_str()].is_string(),
                "{script} reads {variable}, which its step does not set"
            );
        }
    }
    // The outputs are the run step's, under the names cachectl writes.
    let run_step = steps.iter().find(|s| s["id"] == "run").expect("a run step");
    assert!(run_step["run"].as_str().unwrap().contains("run.sh"));
    for (name, output) in action["outputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(
            output["value"].as_str().unwrap(),
            format!("${{{{ steps.run.outputs.{name} }}}}")
        );
    }
}

#[test]
fn the_actions_steps_build_with_githubs_variables_and_write_the_documented_outputs() {
    let registry = RegistryServer::start();
    let server = CacheServer::local();
    let project = registry_project(&registry);
    let action = yaml("action.yml");
    let runner = Runner::new();
    let cachectl = workspace_binary("cachectl");
    let mut with: BTreeMap<&str, String> = BTreeMap::new();
    with.insert("cachectl", cachectl.display().to_string());
    with.insert("working-directory", project.path().display().to_string());
    with.insert("cache", server.base_url());
    let github = [
        ("GITHUB_REF", "refs/heads/main"),
        ("GITHUB_EVENT_NAME", "push"),
        ("GITHUB_REPOSITORY", "acme/web"),
    ];
    // Step 0 restores the cachectl build (actions/cache, GitHub's own);
    // step 1 finds cachectl; step 2 runs it.
    assert_eq!(action["runs"]["steps"][0]["uses"], "actions/cache@v4");
    let found = ok(runner.step(&action, 1, &with, &github));
    assert!(String::from_utf8_lossy(&found.stdout).contains("cachectl: "));
    assert_eq!(
        pairs(&runner.file("env"))["CACHECTL_BIN"],
        cachectl.display().to_string()
    );

    ok(runner.step(&action, 2, &with, &github));
    let outputs = pairs(&runner.file("output"));
    assert!(
        outputs["image"].starts_with(&format!("{}/acme/web@sha256:", registry.host())),
        "{outputs:?}"
    );
    assert!(outputs["base-image"].starts_with(&format!("{}/acme/base@sha256:", registry.host())));
    assert_eq!(outputs["cache-hit"], "false");
    assert_eq!(outputs["base-key"].len(), 64);
    let summary = std::fs::read_to_string(runner.file("summary")).unwrap();
    assert!(summary.contains("cachectl build `"), "{summary}");
    assert_eq!(project.builds(), 1);

    // The next run of the workflow: a hit, the same base.
    std::fs::remove_file(runner.file("output")).unwrap();
    ok(runner.step(&action, 2, &with, &github));
    let again = pairs(&runner.file("output"));
    assert_eq!(again["cache-hit"], "true");
    assert_eq!(again["base-image"], outputs["base-image"]);
    assert_eq!(project.builds(), 1);

    // The folder cache through the same action.
    project.write("deps/lib.txt", "a dependency\n");
    with.insert("command", "cache-save".into());
    with.insert("name", "deps".into());
    with.insert("path", "deps".into());
    with.insert("key-files", "requirements.txt".into());
    ok(runner.step(&action, 2, &with, &github));
    assert_eq!(pairs(&runner.file("output"))["cache-key"].len(), 64);
    std::fs::remove_dir_all(project.path().join("deps")).unwrap();
    with.insert("command", "cache-restore".into());
    ok(runner.step(&action, 2, &with, &github));
    assert_eq!(pairs(&runner.file("output"))["cache-hit"], "true");
    assert_eq!(
        std::fs::read_to_string(project.path().join("deps/lib.txt")).unwrap(),
        "a dependency\n"
    );

    // A mistyped command is refused with GitHub's error annotation.
    with.insert("command", "deploy".into());
    let refused = runner.step(&action, 2, &with, &github);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("::error::"));
}

#[test]
fn the_action_finds_cachectl_on_path_and_says_what_it_needs_without_it() {
    let action = yaml("action.yml");
    let runner = Runner::new();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(workspace_binary("cachectl"), bin.path().join("cachectl")).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let with = BTreeMap::new();
    let output = {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(action["runs"]["steps"][1]["run"].as_str().unwrap())
            .env("PATH", &path)
            .env("GITHUB_ACTION_PATH", repository())
            .env("GITHUB_ENV", runner.file("env"))
            .env(
                "INPUT_CACHECTL",
                evaluate("${{ inputs.cachectl }}", &action, &with),
            );
        command.output().unwrap()
    };
    ok(output);
    assert_eq!(
        pairs(&runner.file("env"))["CACHECTL_BIN"],
        bin.path().join("cachectl").display().to_string()
    );
    // A copy of the action that has no build of its own, on a runner
    // with neither cachectl nor cargo.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(copy.path().join("ci/github")).unwrap();
    std::fs::copy(
        repository().join("ci/github/install.sh"),
        copy.path().join("ci/github/install.sh"),
    )
    .unwrap();
    let missing = Command::new("bash")
        .arg("-c")
        .arg(action["runs"]["steps"][1]["run"].as_str().unwrap())
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_ACTION_PATH", copy.path())
        .env("GITHUB_ENV", runner.file("env2"))
        .env("INPUT_CACHECTL", "")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stdout).contains("no cachectl on PATH and no cargo"),
        "{}",
        String::from_utf8_lossy(&missing.stdout)
    );
}

#[test]
fn the_gitlab_template_builds_and_hands_the_images_to_later_jobs_as_a_dotenv_report() {
    let registry = RegistryServer::start();
    let project = registry_project(&registry);
    let template = yaml("ci/gitlab/cachectl.gitlab-ci.yml");
    let job = &template[".cachectl-build"];
    assert_eq!(job["extends"], ".cachectl");
    let base = &template[".cachectl"];
    let report = base["artifacts"]["reports"]["dotenv"].as_str().unwrap();
    assert_eq!(base["variables"]["CACHECTL_DOTENV"].as_str(), Some(report));
    // The job's lines, as GitLab runs them: before_script, then script.
    let mut lines: Vec<String> = Vec::new();
    for part in [&base["before_script"], &job["script"]] {
        for line in part.as_sequence().unwrap() {
            lines.push(line.as_str().unwrap().to_owned());
        }
    }
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(workspace_binary("cachectl"), bin.path().join("cachectl")).unwrap();
    let run = || {
        let mut command = Command::new("bash");
        command
            .arg("-ec")
            .arg(lines.join("\n"))
            .current_dir(project.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
            .env("GITLAB_CI", "true")
            .env("CI_PROJECT_DIR", project.path())
            .env("CI_COMMIT_REF_NAME", "main")
            .env("CI_DEFAULT_BRANCH", "main")
            .env("CACHECTL_CACHE_DIR", project.path().join(".records"));
        for (name, value) in base["variables"].as_mapping().unwrap() {
            command.env(name.as_str().unwrap(), value.as_str().unwrap());
        }
        ok(command.output().unwrap())
    };
    run();
    let dotenv = pairs(&project.path().join(report));
    assert!(
        dotenv["CACHECTL_IMAGE"].starts_with(&format!("{}/acme/web@sha256:", registry.host())),
        "{dotenv:?}"
    );
    assert_eq!(dotenv["CACHECTL_CACHE_HIT"], "false");
    assert_eq!(dotenv["CACHECTL_BASE_KEY"].len(), 64);
    run();
    assert_eq!(
        pairs(&project.path().join(report))["CACHECTL_CACHE_HIT"],
        "true"
    );
}
