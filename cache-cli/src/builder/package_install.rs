//! Installing the packages of a plan that package layers must build, in
//! one run inside the image, each ending up in a folder of its own
//! (`work/pkgs/N`, its root the install prefix):
//!
//! - the packages whose artifact has a hash are installed by **one** pip
//!   run (`--no-deps`, hash-checked), as fast as the one-layer install, and
//!   their files are then told apart by each package's `RECORD`. A path
//!   two packages write with different bytes is ambiguous (only the last
//!   one's bytes survive): those packages are installed again alone;
//! - the others (a folder, a checkout: no hash, and hash checking is all
//!   or nothing) are installed alone, as many at once as there are cores.
//!
//! Bytecode is then compiled again, reproducibly (see
//! [`PipInstall::compile_command`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use super::BuildError;
use crate::packages::pip::PipInstall;
use crate::packages::plan::{Plan, normalise};

/// Runs `command` inside the image (the caller's sandbox).
pub trait InImage {
    /// Runs `command` (`{out}` already replaced) with `out` bound in.
    fn run(
        &self,
        out: &Path,
        command: &str,
    ) -> impl std::future::Future<Output = Result<(), BuildError>>;
}

/// Installs `packages` (indexes into `plan`) into `work/pkgs/N`.
pub async fn install(
    in_image: &impl InImage,
    pip: &PipInstall,
    plan: &Plan,
    packages: &[usize],
    work: &Path,
) -> Result<(), BuildError> {
    if packages.is_empty() {
        return Ok(());
    }
    let (together, alone): (Vec<usize>, Vec<usize>) = packages
        .iter()
        .partition(|&&at| plan.packages[at].artifact.hash.is_some());
    let batch = work.join("batch");
    let mut script = String::from("set -u\n");
    if !together.is_empty() {
        script.push_str(&batch_job(pip, plan, &together, work, &batch)?);
    }
    script.push_str(&alone_jobs(pip, plan, &alone, work)?);
    run(in_image, work, "install.sh", &script).await?;
    check(plan, alone.iter().map(|&at| Job::Alone(at)), work)?;
    if together.is_empty() {
        return Ok(());
    }
    check(plan, [Job::Batch], work)?;
    let ambiguous =
        split(&batch, plan, &together, work).map_err(BuildError::io("telling packages apart"))?;
    if ambiguous.is_empty() {
        return Ok(());
    }
    tracing::debug!(
        ?ambiguous,
        "packages writing one path with other bytes: installed alone"
    );
    for &at in &ambiguous {
        let dir = work.join(format!("pkgs/{at}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(BuildError::io("clearing a folder"))?;
        }
    }
    let script = format!("set -u\n{}", alone_jobs(pip, plan, &ambiguous, work)?);
    run(in_image, work, "install-alone.sh", &script).await?;
    check(plan, ambiguous.iter().map(|&at| Job::Alone(at)), work)
}

/// One install of the run: the batch, or one package (its index in the
/// plan) alone.
#[derive(Debug, Clone, Copy)]
enum Job {
    Batch,
    Alone(usize),
}

/// The log of `job`.
fn log_of(work: &Path, job: Job) -> PathBuf {
    let name = match job {
        Job::Batch => "batch".to_owned(),
        Job::Alone(at) => at.to_string(),
    };
    work.join("logs").join(name)
}

fn prepare(work: &Path) -> Result<(), BuildError> {
    for folder in ["logs", "reqs", "jobs"] {
        std::fs::create_dir_all(work.join(folder)).map_err(BuildError::io("creating a folder"))?;
    }
    Ok(())
}

fn invalid(invalid: crate::invalid::Invalid) -> BuildError {
    BuildError::Base(invalid.to_string())
}

/// A job line: `command` (then, unless the step says `--no-compile`, the
/// reproducible compile of `target`) logged to `log`, a failure marked.
fn job(pip: &PipInstall, command: &str, target: &Path, log: &Path) -> Result<String, BuildError> {
    let prefix = format!("/{}", pip.prefix);
    // A file that does not compile is left as pip leaves it.
    let compile = match pip
        .compile_command(&target.display().to_string(), &prefix)
        .map_err(invalid)?
    {
        Some(compile) => format!(" && {{ {compile} >/dev/null 2>&1 || true; }}"),
        None => String::new(),
    };
    Ok(format!(
        "( {command}{compile} ) >'{log}' 2>&1 || touch '{log}.failed'\n",
        log = log.display()
    ))
}

/// The one pip run of the packages `together` into `batch`.
fn batch_job(
    pip: &PipInstall,
    plan: &Plan,
    together: &[usize],
    work: &Path,
    batch: &Path,
) -> Result<String, BuildError> {
    prepare(work)?;
    let requirements = work.join("reqs/batch.txt");
    let lines: String = together
        .iter()
        .map(|&at| format!("{}\n", PipInstall::requirement_line(&plan.packages[at])))
        .collect();
    std::fs::write(&requirements, lines).map_err(BuildError::io("writing a requirements file"))?;
    let command = pip
        .install_command(
            &requirements.display().to_string(),
            &batch.display().to_string(),
        )
        .map_err(invalid)?;
    job(pip, &command, batch, &log_of(work, Job::Batch))
}

/// The jobs installing each of `alone` into `work/pkgs/N`, in a pool of as
/// many as there are cores (xargs), else one by one.
fn alone_jobs(
    pip: &PipInstall,
    plan: &Plan,
    alone: &[usize],
    work: &Path,
) -> Result<String, BuildError> {
    if alone.is_empty() {
        return Ok(String::new());
    }
    prepare(work)?;
    let jobs = work.join("jobs");
    for &at in alone {
        let target = work.join(format!("pkgs/{at}"));
        let requirements = work.join(format!("reqs/{at}.txt"));
        std::fs::write(
            &requirements,
            format!("{}\n", PipInstall::requirement_line(&plan.packages[at])),
        )
        .map_err(BuildError::io("writing a requirements file"))?;
        let command = pip
            .install_command(
                &requirements.display().to_string(),
                &target.display().to_string(),
            )
            .map_err(invalid)?;
        std::fs::write(
            jobs.join(format!("{at:06}.sh")),
            job(pip, &command, &target, &log_of(work, Job::Alone(at)))?,
        )
        .map_err(BuildError::io("writing an install job"))?;
    }
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(format!(
        "if command -v xargs >/dev/null 2>&1; then\n  printf '%s\\0' '{jobs}'/*.sh | xargs -0 -P {parallel} -n 1 sh\nelse\n  for job in '{jobs}'/*.sh; do sh \"$job\"; done\nfi\nrm -f '{jobs}'/*.sh\n",
        jobs = jobs.display()
    ))
}

async fn run(
    in_image: &impl InImage,
    work: &Path,
    name: &str,
    script: &str,
) -> Result<(), BuildError> {
    let path = work.join(name);
    std::fs::write(&path, script).map_err(BuildError::io("writing the install script"))?;
    in_image
        .run(work, &format!("sh '{}'", path.display()))
        .await
}

/// An error naming the first of `jobs` that failed, with pip's output.
fn check(plan: &Plan, jobs: impl IntoIterator<Item = Job>, work: &Path) -> Result<(), BuildError> {
    for job in jobs {
        let log = log_of(work, job);
        if Path::new(&format!("{}.failed", log.display())).exists() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let what = match job {
                Job::Alone(at) => {
                    let package = &plan.packages[at];
                    format!("{}=={} alone", package.name, package.version)
                }
                Job::Batch => "the plan's packages".to_owned(),
            };
            return Err(BuildError::Base(format!(
                "installing {what} failed:\n{output}"
            )));
        }
    }
    Ok(())
}

/// One row of a `RECORD` file: its path and hash (empty for bytecode).
fn record_rows(text: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        if let Some(path) = fields.first().filter(|path| !path.is_empty()) {
            rows.push((path.clone(), fields.get(1).cloned().unwrap_or_default()));
        }
    }
    rows
}

/// A `RECORD` path (relative to the library folder of pip's `--target`
/// staging, `lib/python`; scripts as `../../bin/NAME`) as a path under
/// the target; `None` for one that leaves it.
fn record_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = vec!["lib", "python"];
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    let joined = parts.join("/");
    Some(match joined.strip_prefix("lib/python/") {
        Some(inside) => inside.to_owned(),
        None => joined,
    })
}

/// Tells the packages `together`, installed by one pip run into `batch`,
/// apart into `work/pkgs/N` (hard links) by their `RECORD` files. Returns
/// the packages whose files cannot be told apart (another package wrote
/// one of their paths with other bytes).
fn split(
    batch: &Path,
    plan: &Plan,
    together: &[usize],
    work: &Path,
) -> std::io::Result<Vec<usize>> {
    // Which package a dist-info folder is.
    let by_name: HashMap<(String, String), usize> = together
        .iter()
        .map(|&at| {
            let package = &plan.packages[at];
            ((package.name.clone(), package.version.clone()), at)
        })
        .collect();
    let mut claims: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir(batch)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".dist-info") else {
            continue;
        };
        let Some((distribution, version)) = stem.rsplit_once('-') else {
            continue;
        };
        let Some(&at) = by_name.get(&(normalise(distribution), version.to_owned())) else {
            continue;
        };
        let record = std::fs::read_to_string(entry.path().join("RECORD"))?;
        for (path, hash) in record_rows(&record) {
            if let Some(path) = record_path(&path)
                && batch.join(&path).is_file()
            {
                claims.entry(path).or_default().push((at, hash));
            }
        }
    }
    // A file no RECORD names cannot be given to a package: every package
    // is then installed alone.
    let unclaimed = files_under(batch)?
        .into_iter()
        .any(|path| !claims.contains_key(&path));
    if unclaimed {
        return Ok(together.to_vec());
    }
    // A path two packages write is theirs alike only when RECORD shows
    // the same bytes for both; a missing hash proves nothing. Bytecode has
    // no hash in RECORD: its source's path decides for it.
    let mut ambiguous: Vec<usize> = claims
        .iter()
        .filter(|(path, claimants)| {
            claimants.len() > 1
                && !path.ends_with(".pyc")
                && claimants
                    .iter()
                    .any(|(_, hash)| hash.is_empty() || *hash != claimants[0].1)
        })
        .flat_map(|(_, claimants)| claimants.iter().map(|(at, _)| *at))
        .collect();
    ambiguous.sort_unstable();
    ambiguous.dedup();
    for (path, claimants) in &claims {
        for (at, _) in claimants {
            if ambiguous.contains(at) {
                continue;
            }
            let destination = work.join(format!("pkgs/{at}")).join(path);
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::hard_link(batch.join(path), destination)?;
        }
    }
    // A package that wrote nothing still has its (empty) folder.
    for &at in together {
        std::fs::create_dir_all(work.join(format!("pkgs/{at}")))?;
    }
    Ok(ambiguous)
}

/// Every file and link under `root`, relative and `/`-separated.
fn files_under(root: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                found.push(relative);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_rows_and_paths_read_as_pip_writes_them() {
        let record = "flask/app.py,sha256=abc,123\n\"odd,name.py\",sha256=def,4\n../../bin/flask,sha256=ghi,5\nflask/__pycache__/app.cpython-311.pyc,,\n";
        let rows = record_rows(record);
        assert_eq!(rows[1].0, "odd,name.py");
        assert_eq!(rows[3].1, "");
        let paths: Vec<Option<String>> = rows.iter().map(|(path, _)| record_path(path)).collect();
        assert_eq!(
            paths,
            [
                Some("flask/app.py".to_owned()),
                Some("odd,name.py".to_owned()),
                Some("bin/flask".to_owned()),
                Some("flask/__pycache__/app.cpython-311.pyc".to_owned()),
            ]
        );
        assert_eq!(record_path("../../../../etc/passwd"), None);
        assert_eq!(record_path("/etc/passwd"), None);
    }
}
