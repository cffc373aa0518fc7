//! The native builder's install step runs inside the `from` image's own
//! userland: a real Debian image with python3 and pip (made by mmdebstrap
//! in `scripts/install-test-deps`) in a real registry, `pip install
//! --target {out}/…` of a package with a console script, and the script
//! run inside the built image with `chroot` into its `umoci unpack`. Its
//! shebang is the image's interpreter, where installing on the runner
//! writes the runner's.

use std::path::Path;
use std::process::Command;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::files_under;
use cachectl_e2e::python::{HELLO_WHEEL, push_python_image, write_hello_wheel};
use cachectl_e2e::registry::{RegistryServer, unpack};

fn configure(project: &Project, image: &str, from: &str) {
    project.write("requirements.txt", "hello==1.0\n");
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{image}"
manifests = ["requirements.txt"]
builder = "native"
from = "{from}"
install = "pip install --no-index --no-cache-dir --disable-pip-version-check --target {{out}}/opt/deps {HELLO_WHEEL}"
platform = "linux/amd64"
"#
        ),
    );
}

fn shebang(rootfs: &Path) -> String {
    let script = std::fs::read_to_string(rootfs.join("opt/deps/bin/hello"))
        .expect("the console script is in the image");
    script.lines().next().unwrap_or_default().to_owned()
}

fn built_rootfs(image: &str, report: &serde_json::Value, into: &Path) -> std::path::PathBuf {
    let key16 = &report["key"].as_str().unwrap()[..16];
    unpack(&format!("docker://{image}:base-{key16}"), into).join("rootfs")
}

#[test]
fn a_console_script_installed_by_the_native_builder_runs_inside_the_image() {
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let image = format!("{}/acme/web-base", registry.host());
    let project = Project::new();
    write_hello_wheel(project.path());
    configure(&project, &image, &from);

    let explain = project.cachectl(&["hash", "--explain"], &[]).success();
    assert!(
        explain.stderr.contains("recipe install-in"),
        "{}",
        explain.stderr
    );
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");
    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = built_rootfs(&image, &built, unpacked.path());
    assert_eq!(shebang(&rootfs), "#!/usr/bin/python3");
    let run = Command::new("chroot")
        .arg(&rootfs)
        .args([
            "/usr/bin/env",
            "PYTHONPATH=/opt/deps",
            "/opt/deps/bin/hello",
        ])
        .output()
        .expect("chroot runs");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from /usr/bin/python3\n"
    );
    // Only what the step wrote under {out} is the layer: nothing of the
    // image's own files, nor the mount points of the project and {out}.
    let layers = cachectl_e2e::registry::skopeo_inspect(
        &format!(
            "docker://{image}:base-{}",
            &built["key"].as_str().unwrap()[..16]
        ),
        false,
    )["Layers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(layers, 2, "one layer of the image, one of the install");

    // The image's root filesystem was unpacked once and is reused; the
    // build's private copy is gone.
    let cache = project.path().join(".cachectl/rootfs");
    project.append("requirements.txt", "# a comment changes the key\n");
    let again = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(again["source"], "built");
    let unpacked_roots: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(unpacked_roots.len(), 1, "{unpacked_roots:?}");
    assert!(
        files_under(&cache.join(".work")).is_empty(),
        "a build's root filesystem copy was left behind"
    );

    // The runner's userland, for contrast: the same step on the host
    // writes the runner's interpreter into the script.
    let real = |path: &str| std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let host_python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let host_python = real(String::from_utf8_lossy(&host_python.stdout).trim());
    let on_host = project
        .cachectl(&["ensure-base", "--json", "--install-in", "host"], &[])
        .success()
        .json();
    assert_ne!(on_host["key"], again["key"], "install_in is not in the key");
    let unpacked_host = tempfile::tempdir().unwrap();
    let host_rootfs = built_rootfs(&image, &on_host, unpacked_host.path());
    let written = shebang(&host_rootfs);
    assert_eq!(
        real(written.trim_start_matches("#!")),
        host_python,
        "{written}"
    );
}
