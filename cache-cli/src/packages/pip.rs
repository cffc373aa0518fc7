//! The pip side of package layers: recognising a native install step whose
//! last command is `pip install … --target {out}/PREFIX`, the commands that
//! resolve its plan (`--dry-run --report`) and install one package alone
//! (`--no-deps`, the planned artifact checked by its hash), and reading
//! pip's installation report into a [`Plan`].

use serde::Deserialize;

use super::plan::{Artifact, ArtifactHash, Interpreter, Package, Plan, Tie};
use crate::invalid::Invalid;

/// pip options that take a value (as a separate word or after `=`); the
/// ones that name requirements are told apart by [`requirement_option`].
const VALUED: &[&str] = &[
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-e",
    "--editable",
    "-t",
    "--target",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--trusted-host",
    "--cert",
    "--client-cert",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--root",
    "--prefix",
    "--src",
    "--upgrade-strategy",
    "--progress-bar",
    "--log",
    "--proxy",
    "--retries",
    "--timeout",
    "--exists-action",
    "--cache-dir",
    "-C",
    "--config-settings",
    "--global-option",
    "--report",
    "--only-binary",
    "--no-binary",
    "--keyring-provider",
    "--use-feature",
    "--use-deprecated",
    "--python",
];

/// Options whose value names requirements (or where they go): not kept
/// for the install of one planned package.
fn requirement_option(option: &str) -> bool {
    matches!(
        option,
        "-r" | "--requirement" | "-c" | "--constraint" | "-e" | "--editable" | "-t" | "--target"
    )
}

/// Options that change what one package installs as, or that only make
/// sense for a whole resolution: dropped for the install of one package.
fn resolution_flag(option: &str) -> bool {
    matches!(
        option,
        "-U" | "--upgrade" | "--force-reinstall" | "--no-deps" | "--dry-run" | "--require-hashes"
    )
}

/// A native install step that package layers can take apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipInstall {
    /// The commands before the pip install (e.g. an export that writes
    /// the requirements it reads), as written; run before resolving.
    pub prepare: Option<String>,
    /// The pip command as written (the last command of the step).
    pub command: String,
    /// The program: `pip`, `pip3`, `python3 -m pip`, a path.
    pub program: Vec<String>,
    /// The options kept for installing one package alone: index, links,
    /// certificates, compile and binary choices.
    pub options: Vec<String>,
    /// Where the packages go inside the image, relative to its root
    /// (`opt/deps` for `--target {out}/opt/deps`).
    pub prefix: String,
}

impl PipInstall {
    /// The pip install of `install` (a native step, `{out}` not yet
    /// replaced); `None` when its last command is not `pip install` with
    /// `--target {out}/PREFIX`, or it uses shell syntax beyond `&&`.
    pub fn recognise(install: &str) -> Option<Self> {
        let (prepare, command) = match install.rsplit_once("&&") {
            Some((before, last)) => (Some(before.trim().to_owned()), last.trim()),
            None => (None, install.trim()),
        };
        if command.contains([';', '|', '>', '<', '`', '$', '\n']) {
            return None;
        }
        let words = shlex::split(command)?;
        let at = words.iter().position(|word| word == "install")?;
        let program = words[..at].to_vec();
        let is_pip = match program.as_slice() {
            [one] => {
                let name = one.rsplit('/').next().unwrap_or(one);
                name == "pip" || name.starts_with("pip3")
            }
            [python, dash_m, pip] => {
                python
                    .rsplit('/')
                    .next()
                    .unwrap_or(python)
                    .starts_with("python")
                    && dash_m == "-m"
                    && pip == "pip"
            }
            _ => false,
        };
        if !is_pip {
            return None;
        }
        let mut options = Vec::new();
        let mut target = None;
        let mut rest = words[at + 1..].iter();
        while let Some(word) = rest.next() {
            let (option, inline) = match word.split_once('=') {
                Some((option, value)) if option.starts_with("--") => (option, Some(value)),
                _ => (word.as_str(), None),
            };
            if !option.starts_with('-') {
                continue; // a requirement
            }
            if VALUED.contains(&option) {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => rest.next()?.clone(),
                };
                if option == "-t" || option == "--target" {
                    target = Some(value);
                } else if !requirement_option(option) {
                    options.push(format!("{option}={value}"));
                }
            } else if !resolution_flag(option) {
                options.push(word.clone());
            }
        }
        let prefix = target?.strip_prefix("{out}")?.trim_matches('/').to_owned();
        if prefix.is_empty() || prefix.split('/').any(|part| part == "..") {
            return None;
        }
        Some(Self {
            prepare,
            command: command.to_owned(),
            program,
            options,
            prefix,
        })
    }

    /// The whole step, as the one-layer build runs it (`{out}` to be
    /// replaced): what decides the bytes of a path packages write
    /// differently, in pip's own install order.
    pub fn whole_step(&self) -> String {
        match &self.prepare {
            Some(prepare) => format!("{prepare} && {}", self.command),
            None => self.command.clone(),
        }
    }

    /// The step that resolves the plan without installing: the commands
    /// before the pip install, then the pip install itself with
    /// `--dry-run --report REPORT` (`{out}` to be replaced as in the
    /// install step).
    pub fn resolve_command(&self, report: &str) -> Result<String, Invalid> {
        let quoted = quote(report)?;
        let pip = format!(
            "{} --dry-run --quiet --disable-pip-version-check --report {quoted}",
            self.command
        );
        Ok(match &self.prepare {
            Some(prepare) => format!("{prepare} && {pip}"),
            None => pip,
        })
    }

    /// The requirements-file line of `package`: the planned artifact,
    /// checked by its hash when the plan has one (a hash is only allowed
    /// in a requirements file).
    pub fn requirement_line(package: &Package) -> String {
        match (&package.artifact.hash, package.direct) {
            (Some(ArtifactHash::Sha256(sha256)), false) => format!(
                "{}=={} --hash=sha256:{sha256}",
                package.name, package.version
            ),
            (Some(ArtifactHash::Sha256(sha256)), true) => {
                format!("{} --hash=sha256:{sha256}", package.artifact.url)
            }
            _ => package.artifact.url.clone(),
        }
    }

    /// The command that installs the one package of `requirements` (a
    /// file holding its [`PipInstall::requirement_line`]) alone into
    /// `target`.
    pub fn install_command(&self, requirements: &str, target: &str) -> Result<String, Invalid> {
        let mut words: Vec<String> = self.program.clone();
        words.push("install".into());
        words.extend(self.options.iter().cloned());
        words.extend([
            "--no-deps".into(),
            "--target".into(),
            target.to_owned(),
            "-r".into(),
            requirements.to_owned(),
        ]);
        let quoted: Result<Vec<String>, Invalid> = words.iter().map(|word| quote(word)).collect();
        Ok(quoted?.join(" "))
    }
}

impl PipInstall {
    /// The command that compiles the package in `folder` (installed there
    /// for `prefix` in the image) again, reproducibly: pip compiles in a
    /// temporary folder whose random name ends up in every `.pyc`; these
    /// are hash-checked and name the files' final paths. pip's `RECORD`
    /// lists bytecode without a hash, so it stays true. `None` when the
    /// step says `--no-compile`.
    pub fn compile_command(&self, folder: &str, prefix: &str) -> Result<Option<String>, Invalid> {
        if self.options.iter().any(|option| option == "--no-compile") {
            return Ok(None);
        }
        let python = match self.program.as_slice() {
            [python, dash_m, _] if dash_m == "-m" => python.clone(),
            _ => "python3".to_owned(),
        };
        let words = [
            python.as_str(),
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "checked-hash",
            "-d",
            prefix,
            folder,
        ];
        let quoted: Result<Vec<String>, Invalid> = words.iter().map(|word| quote(word)).collect();
        Ok(Some(quoted?.join(" ")))
    }
}

fn quote(word: &str) -> Result<String, Invalid> {
    shlex::try_quote(word)
        .map(|quoted| quoted.into_owned())
        .map_err(|_| Invalid(format!("{word:?} cannot be quoted for the shell")))
}

/// pip's installation report (`--report`, version 1).
#[derive(Debug, Deserialize)]
struct Report {
    version: String,
    install: Vec<ReportItem>,
    environment: Environment,
}

#[derive(Debug, Deserialize)]
struct ReportItem {
    download_info: DownloadInfo,
    #[serde(default)]
    is_direct: bool,
    #[serde(default)]
    requested: bool,
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct DownloadInfo {
    url: String,
    #[serde(default)]
    archive_info: Option<ArchiveInfo>,
}

#[derive(Debug, Deserialize)]
struct ArchiveInfo {
    /// `sha256=HEX` (pip before 23.1 wrote only this).
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    hashes: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Environment {
    implementation_name: String,
    python_version: String,
    platform_machine: String,
    sys_platform: String,
}

impl ArchiveInfo {
    fn sha256(&self) -> Option<String> {
        let hex = self
            .hashes
            .as_ref()
            .and_then(|hashes| hashes.get("sha256").cloned())
            .or_else(|| {
                self.hash
                    .as_deref()
                    .and_then(|hash| hash.strip_prefix("sha256="))
                    .map(str::to_owned)
            })?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hex.to_ascii_lowercase())
    }
}

/// The plan in pip's report `bytes`, in pip's install order.
pub fn read_report(bytes: &[u8]) -> Result<Plan, Invalid> {
    let report: Report = serde_json::from_slice(bytes)
        .map_err(|e| Invalid(format!("pip's installation report: {e}")))?;
    if report.version != "1" {
        return Err(Invalid(format!(
            "pip's installation report is version {}, not 1",
            report.version
        )));
    }
    let packages = report
        .install
        .into_iter()
        .map(|item| {
            let artifact = Artifact {
                hash: item
                    .download_info
                    .archive_info
                    .as_ref()
                    .and_then(ArchiveInfo::sha256)
                    .map(ArtifactHash::Sha256),
                url: item.download_info.url,
            };
            Package {
                name: super::plan::normalise(&item.metadata.name),
                version: item.metadata.version,
                tie: Tie::of_wheel(&artifact),
                artifact,
                direct: item.is_direct,
                requested: item.requested,
                needs: Vec::new(),
            }
        })
        .collect();
    let environment = report.environment;
    Ok(Plan {
        packages,
        interpreter: Interpreter {
            implementation: environment.implementation_name,
            version: environment.python_version,
            machine: environment.platform_machine,
            platform: environment.sys_platform,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipes_init_writes_are_recognised() {
        let pip = PipInstall::recognise(
            "pip install --no-cache-dir --target {out}/opt/deps -r requirements.txt",
        )
        .unwrap();
        assert_eq!(pip.prefix, "opt/deps");
        assert_eq!(pip.program, ["pip"]);
        assert_eq!(pip.options, ["--no-cache-dir"]);
        assert_eq!(pip.prepare, None);

        let poetry = PipInstall::recognise(
            "pip install --no-cache-dir poetry poetry-plugin-export && poetry export --only main --without-hashes -f requirements.txt -o /tmp/requirements.txt && pip install --no-cache-dir --target {out}/opt/deps -r /tmp/requirements.txt",
        )
        .unwrap();
        assert_eq!(
            poetry.prepare.as_deref(),
            Some(
                "pip install --no-cache-dir poetry poetry-plugin-export && poetry export --only main --without-hashes -f requirements.txt -o /tmp/requirements.txt"
            )
        );
        let links = PipInstall::recognise(
            "python3 -m pip install --no-index --find-links wheels --target={out}/opt/deps -r requirements.txt -c constraints.txt",
        )
        .unwrap();
        assert_eq!(links.program, ["python3", "-m", "pip"]);
        assert_eq!(links.options, ["--no-index", "--find-links=wheels"]);
    }

    #[test]
    fn steps_package_layers_cannot_take_apart_are_not_recognised() {
        for install in [
            "pip install -r requirements.txt",
            "pip install --target /opt/deps -r requirements.txt",
            "pip install --target {out} -r requirements.txt",
            "pip install --target {out}/../x -r requirements.txt",
            "npm ci && cp -r node_modules {out}/",
            "pip install --target {out}/opt/deps -r requirements.txt; rm -rf {out}/opt/deps/bin",
            "pip install --target {out}/opt/deps -r $REQS",
        ] {
            assert_eq!(PipInstall::recognise(install), None, "{install}");
        }
    }

    #[test]
    fn one_package_is_installed_alone_and_checked_by_its_hash() {
        let pip = PipInstall::recognise(
            "pip install --no-index --find-links wheels --upgrade --target {out}/opt/deps -r requirements.txt",
        )
        .unwrap();
        let sha = "ab".repeat(32);
        let package = Package {
            name: "django".into(),
            version: "5.1.4".into(),
            artifact: Artifact {
                url: "file:///p/wheels/Django-5.1.4-py3-none-any.whl".into(),
                hash: Some(ArtifactHash::Sha256(sha.clone())),
            },
            direct: false,
            requested: true,
            tie: Tie::Interpreter,
            needs: Vec::new(),
        };
        let command = pip.install_command("/o/reqs/1", "/o/pkgs/1").unwrap();
        assert_eq!(
            shlex::split(&command).unwrap().join(" "),
            "pip install --no-index --find-links=wheels --no-deps --target /o/pkgs/1 -r /o/reqs/1"
        );
        assert_eq!(
            PipInstall::requirement_line(&package),
            format!("django==5.1.4 --hash=sha256:{sha}")
        );
        assert_eq!(
            pip.resolve_command("{out}/plan.json").unwrap(),
            "pip install --no-index --find-links wheels --upgrade --target {out}/opt/deps -r requirements.txt --dry-run --quiet --disable-pip-version-check --report '{out}/plan.json'"
        );
    }

    #[test]
    fn a_report_becomes_the_plan_in_install_order() {
        let report = br#"{"version": "1", "pip_version": "23.0.1", "install": [
            {"download_info": {"url": "https://files.example/Django-5.1.4-py3-none-any.whl", "archive_info": {"hash": "sha256=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"}}, "is_direct": false, "requested": true, "metadata": {"name": "Django", "version": "5.1.4"}},
            {"download_info": {"url": "file:///p/wheels/zope.interface-7.2-cp311-cp311-manylinux_2_17_x86_64.whl", "archive_info": {"hashes": {"sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}}}, "is_direct": false, "metadata": {"name": "zope.interface", "version": "7.2"}},
            {"download_info": {"url": "file:///p/src/local", "dir_info": {}}, "is_direct": true, "metadata": {"name": "Local_App", "version": "0.1"}}
        ], "environment": {"implementation_name": "cpython", "python_version": "3.11", "platform_machine": "x86_64", "sys_platform": "linux", "python_full_version": "3.11.2"}}"#;
        let plan = read_report(report).unwrap();
        let names: Vec<&str> = plan.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["django", "zope-interface", "local-app"]);
        assert_eq!(
            plan.packages[0].artifact.hash,
            Some(ArtifactHash::Sha256("ab".repeat(32)))
        );
        assert_eq!(
            plan.packages[1].artifact.hash,
            Some(ArtifactHash::Sha256("cd".repeat(32)))
        );
        assert_eq!(plan.packages[2].artifact.hash, None);
        assert!(plan.packages[2].direct);
        assert_eq!(plan.interpreter.version, "3.11");
        assert!(read_report(br#"{"version": "2", "install": [], "environment": {}}"#).is_err());
    }
}
