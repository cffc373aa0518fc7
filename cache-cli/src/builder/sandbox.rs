//! Running the native builder's install step inside the `from` image's own
//! userland: a private copy of its root filesystem, the project and `{out}`
//! bound in at their own paths (so paths in the command mean the same
//! inside), `/proc` and `/dev`, the host's DNS settings, then `chroot`. All
//! of it happens in a private mount and PID namespace made by util-linux's
//! `unshare` (as root; otherwise in a user namespace where root maps to the
//! caller), so nothing is mounted on the host and every process of the step
//! ends with it. The network is the host's.
//!
//! The step sees the image's environment (its config's `Env`), `HOME`,
//! `SOURCE_DATE_EPOCH` (cachectl's, 0 by default), the build arguments,
//! `CACHECTL_OUT` and the host's proxy variables, never
//! the runner's `PATH` or other variables: interpreters, shebangs and
//! libraries are the image's.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use tokio::process::Command;

use super::{BuildError, changes, run_command_streaming};

/// Host variables the step inherits (a proxy is the runner's business).
const PASSED_THROUGH: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The script `unshare` runs: mounts, then `chroot`. Its arguments are
/// the chroot program, the root, the project, `{out}`, `mount`, the
/// command and the overlay's options (empty for a copied root); nothing of
/// them reaches the step's environment.
const SCRIPT: &str = r#"set -e
chroot_bin=$1 root=$2 project=$3 out=$4 mount_bin=$5 command=$6 overlay=$7
if [ -n "$overlay" ]; then "$mount_bin" -t overlay overlay -o "$overlay" "$root"; fi
"$mount_bin" --bind "$project" "$root$project"
"$mount_bin" --bind "$out" "$root$out"
"$mount_bin" -t proc proc "$root/proc"
"$mount_bin" --rbind /dev "$root/dev"
exec "$chroot_bin" "$root" /bin/sh -c 'cd "$1" && exec /bin/sh -c "$2"' sh "$project" "$command"
"#;

/// A program on the host's `PATH` (or the usual system folders).
fn host_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|folder| folder.join(name))
        .find(|candidate| candidate.is_file())
}

/// Creates `inside` (an absolute host path) as a folder under `root`,
/// replacing any symlink on the way: the image's links must not lead the
/// creation, or the mount, to the host's folders.
fn mount_point(root: &Path, inside: &Path) -> std::io::Result<PathBuf> {
    let mut current = root.to_path_buf();
    for part in inside.components() {
        let Component::Normal(name) = part else {
            continue;
        };
        current.push(name);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&current)?;
                std::fs::create_dir(&current)?;
            }
            Err(_) => std::fs::create_dir(&current)?,
        }
    }
    Ok(current)
}

/// The step's environment: the image's `Env`, then `HOME`, the proxies,
/// the build arguments and `CACHECTL_OUT`.
fn step_env(
    image_env: &[String],
    args: &[(String, String)],
    out: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = image_env
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let has = |env: &[(OsString, OsString)], name: &str| env.iter().any(|(k, _)| k == name);
    if !has(&env, "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), "/root".into()));
    }
    for name in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(name) {
            env.push(((*name).into(), value));
        }
    }
    // Reproducible output from the tools that honour it: Python writes
    // hash-checked bytecode instead of bytecode stamped with the time the
    // files were unpacked, so the same plan gives the same bytes.
    env.push((
        "SOURCE_DATE_EPOCH".into(),
        crate::pack::layer::source_date_epoch().to_string().into(),
    ));
    env.extend(args.iter().map(|(k, v)| (k.into(), v.into())));
    env.push(("CACHECTL_OUT".into(), out.into()));
    env
}

/// Copies the host's DNS settings into the root, replacing the image's
/// (often a link to a resolver the image does not run).
fn host_dns(root: &Path) -> std::io::Result<()> {
    let etc = mount_point(root, Path::new("/etc"))?;
    for name in ["resolv.conf", "hosts"] {
        let host = Path::new("/etc").join(name);
        if host.is_file() {
            let inside = etc.join(name);
            if std::fs::symlink_metadata(&inside).is_ok() {
                std::fs::remove_file(&inside)?;
            }
            std::fs::copy(host, inside)?;
        }
    }
    Ok(())
}

/// Removes the build's folder `work`: first the mount points, each only if
/// empty, and the overlay's mount point `merged` likewise (a mount still in
/// place would otherwise have the project's files, or the cached image's,
/// deleted through it), then the rest.
fn remove_copy(work: &Path, mounts: &[PathBuf], merged: &Path) -> std::io::Result<()> {
    for mount in mounts {
        std::fs::remove_dir(mount)?;
    }
    if std::fs::read_dir(merged).is_ok_and(|mut entries| entries.next().is_some())
        && std::fs::symlink_metadata(work.join("upper")).is_ok()
    {
        return Err(std::io::Error::other(format!(
            "{} is not empty: the overlay is still mounted",
            merged.display()
        )));
    }
    remove_tree(work)
}

/// What the step needs.
#[derive(Debug)]
pub struct Step<'a> {
    /// The unpacked root filesystem (left unchanged).
    pub rootfs: &'a Path,
    /// A folder for the build's own layer of the root filesystem (on the
    /// same filesystem as `rootfs`, for a fast copy where overlayfs is not
    /// available).
    pub scratch: &'a Path,
    /// The project root: the working directory.
    pub project: &'a Path,
    /// The folder that becomes the layer.
    pub out: &'a Path,
    /// The command, `{out}` already replaced.
    pub command: &'a str,
    /// The image config's `Env`.
    pub image_env: &'a [String],
    /// Build arguments.
    pub args: &'a [(String, String)],
    /// Where to put what the step changed in the image, as a layer tree
    /// (see [`super::changes`]); `None` when only `{out}` is the layer.
    pub changes: Option<&'a Path>,
}

/// The host programs the step needs.
struct Tools {
    unshare: PathBuf,
    chroot: PathBuf,
    mount: PathBuf,
}

impl Tools {
    fn find() -> Result<Self, BuildError> {
        let find = |name: &str| {
            host_program(name).ok_or_else(|| {
                BuildError::Base(format!(
                    "the native builder runs the install step inside the `from` image with \
                     `{name}` (util-linux), which is not installed; install it, or set \
                     install_in = \"host\""
                ))
            })
        };
        Ok(Self {
            unshare: find("unshare")?,
            chroot: find("chroot")?,
            mount: find("mount")?,
        })
    }

    /// `unshare` with a private mount and PID namespace (and a user
    /// namespace when not root), running `args`.
    fn unshare(&self) -> Command {
        let mut command = Command::new(&self.unshare);
        if !rustix::process::geteuid().is_root() {
            command.args(["--user", "--map-root-user"]);
        }
        command.args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
        ]);
        command
    }
}

/// Where the build's root filesystem is: the image's read-only under an
/// overlay whose upper folder takes the build's writes, or, where overlayfs
/// cannot be mounted, a copy.
struct Root {
    /// The folder the step chroots into.
    merged: PathBuf,
    /// The overlay's lower and upper folders and work folder, if one.
    overlay: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Where files are written before the step (mount points, DNS): the
    /// upper folder or the copy.
    writable: PathBuf,
}

/// The mount options of an overlay.
fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    )
}

/// Whether overlayfs can be mounted here (a kernel or a user namespace
/// may refuse it): one probe mount in a throwaway namespace.
async fn overlay_works(tools: &Tools, folder: &Path, lower: &Path) -> bool {
    let (upper, work, merged) = (
        folder.join("probe-upper"),
        folder.join("probe-work"),
        folder.join("probe-merged"),
    );
    for dir in [&upper, &work, &merged] {
        if std::fs::create_dir_all(dir).is_err() {
            return false;
        }
    }
    let status = tools
        .unshare()
        .arg(&tools.mount)
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(overlay_options(lower, &upper, &work))
        .arg(&merged)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    let _ = remove_tree(&work);
    let _ = std::fs::remove_dir_all(&upper);
    let _ = std::fs::remove_dir(&merged);
    status.is_ok_and(|status| status.success())
}

/// Removes a tree, making folders writable on the way (overlayfs leaves
/// a `work/work` folder of mode 000).
fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let _ = std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700));
        for entry in std::fs::read_dir(&folder)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(path)
}

/// Sets up the build's root filesystem in `work`.
async fn root(tools: &Tools, work: &Path, rootfs: &Path) -> Result<Root, BuildError> {
    let merged = work.join("root");
    std::fs::create_dir(&merged).map_err(BuildError::io("creating the build's root"))?;
    if overlay_works(tools, work, rootfs).await {
        let (upper, overlay_work) = (work.join("upper"), work.join("work"));
        for dir in [&upper, &overlay_work] {
            std::fs::create_dir(dir).map_err(BuildError::io("creating the build's overlay"))?;
        }
        return Ok(Root {
            merged,
            overlay: Some((rootfs.to_path_buf(), upper.clone(), overlay_work)),
            writable: upper,
        });
    }
    tracing::info!("overlayfs is not available here; copying the image's root filesystem");
    std::fs::remove_dir(&merged).map_err(BuildError::io("creating the build's root"))?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(rootfs)
        .arg(&merged)
        .status()
        .await
        .map_err(BuildError::io("copying the base image's root filesystem"))?;
    if !copied.success() {
        return Err(BuildError::Base(format!(
            "copying {} failed ({copied})",
            rootfs.display()
        )));
    }
    Ok(Root {
        writable: merged.clone(),
        merged,
        overlay: None,
    })
}

/// Runs the step, streaming its output like every builder.
pub async fn run(step: &Step<'_>) -> Result<(), BuildError> {
    let tools = Tools::find()?;
    // Bound in at their own absolute paths.
    let project = std::fs::canonicalize(step.project)
        .map_err(BuildError::io("finding the project folder"))?;
    let out = std::fs::canonicalize(step.out).map_err(BuildError::io("finding {out}"))?;
    let (project, out) = (project.as_path(), out.as_path());
    let work = tempfile::Builder::new()
        .prefix("cachectl-root-")
        .tempdir_in(step.scratch)
        .map_err(BuildError::io("creating the build's root filesystem"))?;
    let root = root(&tools, work.path(), step.rootfs).await?;
    if step.changes.is_some() && root.overlay.is_none() {
        return Err(BuildError::Base(
            "capture = \"changes\" needs overlayfs, which cannot be mounted here; \
             use capture = \"out\""
                .into(),
        ));
    }
    let prepare = || -> std::io::Result<Vec<PathBuf>> {
        host_dns(&root.writable)?;
        mount_point(&root.writable, Path::new("/proc"))?;
        mount_point(&root.writable, Path::new("/dev"))?;
        Ok(vec![
            mount_point(&root.writable, project)?,
            mount_point(&root.writable, out)?,
        ])
    };
    let mounts = prepare().map_err(BuildError::io("preparing the build's root filesystem"))?;

    let overlay = root
        .overlay
        .as_ref()
        .map(|(lower, upper, work)| overlay_options(lower, upper, work))
        .unwrap_or_default();
    let mut command = tools.unshare();
    command
        .args(["/bin/sh", "-c", SCRIPT, "cachectl-sandbox"])
        .arg(&tools.chroot)
        .arg(&root.merged)
        .arg(project)
        .arg(out)
        .arg(&tools.mount)
        .arg(step.command)
        .arg(overlay)
        .current_dir(project)
        .env_clear()
        .envs(step_env(step.image_env, step.args, out));
    let described = format!("sh -c {:?} (inside the from image)", step.command);
    let mut result = run_command_streaming(command, described).await;
    if result.is_ok()
        && let (Some(into), Some((lower, upper, _))) = (step.changes, &root.overlay)
    {
        let ours = [
            Path::new("/proc"),
            Path::new("/dev"),
            Path::new("/etc/resolv.conf"),
            Path::new("/etc/hosts"),
            project,
            out,
        ]
        .map(Path::to_path_buf);
        result = changes::collect(upper, lower, &ours, into).map_err(BuildError::io(
            "collecting what the step changed in the image",
        ));
    }
    // The namespace, and its mounts, ended with the step. Should one still
    // be in place, the folder is left, never removed through it (a dropped
    // `TempDir` would).
    let removed = remove_copy(work.path(), &mounts, &root.merged);
    if removed.is_err() {
        let _ = work.keep();
    }
    match (result, removed) {
        (Err(error), removed) => {
            if let Err(cleanup) = removed {
                tracing::warn!(%cleanup, "the build's root filesystem was left in place");
            }
            Err(error)
        }
        (Ok(()), Err(cleanup)) => Err(BuildError::io(
            "removing the build's root filesystem (is a mount still in place?)",
        )(cleanup)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_replace_the_images_links_instead_of_following_them() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("srv")).unwrap();
        let point = mount_point(root.path(), Path::new("/srv/project/app")).unwrap();
        assert_eq!(point, root.path().join("srv/project/app"));
        assert!(point.is_dir());
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "a folder was created outside the root"
        );
    }

    #[test]
    fn the_step_sees_the_images_path_not_the_runners() {
        let env = step_env(
            &["PATH=/usr/local/bin:/usr/bin".into(), "LANG=C.UTF-8".into()],
            &[("PY".into(), "3.11".into())],
            Path::new("/tmp/out"),
        );
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("PATH").as_deref(), Some("/usr/local/bin:/usr/bin"));
        assert_eq!(get("HOME").as_deref(), Some("/root"));
        assert_eq!(get("PY").as_deref(), Some("3.11"));
        assert_eq!(get("CACHECTL_OUT").as_deref(), Some("/tmp/out"));
        assert_eq!(get("CARGO_HOME"), None);
    }

    #[test]
    fn a_copy_with_a_mount_still_in_place_is_not_deleted_through_it() {
        let work = tempfile::tempdir().unwrap();
        let mount = work.path().join("root/project");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(mount.join("precious"), "x").unwrap();
        let merged = work.path().join("root");
        assert!(remove_copy(work.path(), std::slice::from_ref(&mount), &merged).is_err());
        assert!(mount.join("precious").exists());
    }
}
