//! Finding the binaries under test and the installed test services.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The folder `scripts/install-test-deps` installs into.
pub fn deps_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CACHECTL_TEST_DEPS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    home.join(".cache/cachectl-test-deps")
}

/// The workspace's target folder for the profile the caller was built with:
/// test executables live in `target/<profile>/deps/`, binaries (such as the
/// benchmark harness) in `target/<profile>/`.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("the executable lives in a folder");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_owned())
    } else {
        dir.to_owned()
    }
}

/// Path of a workspace binary, built (once per test process) with the same
/// cargo and profile as the tests, so a test never runs a stale binary.
///
/// The build is `cargo build --workspace --bins`, the very command
/// `scripts/test` runs before the suite, so under it this is a no-op; a
/// narrower `--package` build would resolve features differently and
/// rebuild dependencies.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_profile_dir();
    BUILT.get_or_init(|| {
        if std::env::var_os("CACHECTL_SKIP_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "--workspace", "--bins"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// Path of an installed test service: `$CACHECTL_TEST_DEPS/<tool>/bin/<name>`,
/// else on `PATH`.
pub fn service_binary(tool: &str, name: &str) -> PathBuf {
    let installed = deps_dir().join(tool).join("bin").join(name);
    if installed.exists() {
        return installed;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} is not installed (looked in {} and on PATH): run scripts/install-test-deps",
            installed.display()
        )
    })
}
