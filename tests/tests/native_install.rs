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
# One layer for the install: what these tests are about (package layers
# have their own suite).
package_layers = "off"
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

#[test]
fn capture_changes_makes_the_layer_of_everything_the_step_changed_with_modes_and_owners() {
    use std::os::unix::fs::MetadataExt as _;
    let registry = RegistryServer::start();
    let from = push_python_image(&registry);
    let image = format!("{}/acme/system-base", registry.host());
    let project = Project::new();
    write_hello_wheel(project.path());
    configure(&project, &image, &from);
    // A step that changes the system, as an apt install or a service
    // user's files would: a setuid binary, a file of another owner, a
    // deletion; and `{out}` as before. Given as a user types it: the
    // capture as a flag, the step in its variable.
    let install = "mkdir -p /usr/local/share/app && echo conf > /usr/local/share/app/app.conf \
        && chmod 0640 /usr/local/share/app/app.conf && chown 1000:1000 /usr/local/share/app/app.conf \
        && cp /bin/true /usr/local/bin/suid-true && chmod 4755 /usr/local/bin/suid-true \
        && rm /etc/debian_version && mkdir -p {out}/opt/deps && echo dep > {out}/opt/deps/dep";
    let env = [("CACHECTL_BASE_INSTALL", install)];

    let built = project
        .cachectl(&["ensure-base", "--json", "--capture", "changes"], &env)
        .success()
        .json();
    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = built_rootfs(&image, &built, unpacked.path());
    let conf = std::fs::metadata(rootfs.join("usr/local/share/app/app.conf")).unwrap();
    assert_eq!(
        (conf.mode() & 0o7777, conf.uid(), conf.gid()),
        (0o640, 1000, 1000)
    );
    let suid = std::fs::metadata(rootfs.join("usr/local/bin/suid-true")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert!(
        !rootfs.join("etc/debian_version").exists(),
        "the deletion was not carried"
    );
    assert!(
        rootfs.join("etc/os-release").exists(),
        "the image's own files went"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/deps/dep")).unwrap(),
        "dep\n"
    );
    // Nothing of cachectl's own: not the project's mount point, not /proc.
    let project_inside = rootfs.join(
        std::fs::canonicalize(project.path())
            .unwrap()
            .strip_prefix("/")
            .unwrap(),
    );
    assert!(
        !project_inside.exists(),
        "the project's mount point is in the image"
    );
    assert!(
        std::fs::read_dir(rootfs.join("proc")).map_or(true, |mut d| d.next().is_none()),
        "/proc has content"
    );
    // The same inputs give the same layer.
    let hash = project
        .cachectl(&["hash", "--json", "--capture", "changes"], &env)
        .success()
        .json();
    assert!(
        hash["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|input| input["kind"] == "recipe" && input["name"] == "capture"),
        "{hash}"
    );
    assert_eq!(hash["key"], built["key"]);
    let again = project
        .cachectl(
            &["ensure-base", "--json", "--force"],
            &[env[0], ("CACHECTL_CAPTURE", "changes")],
        )
        .success()
        .json();
    assert_eq!(
        again["digest"], built["digest"],
        "the changes layer is not reproducible"
    );

    // Without the image's userland there is nothing to capture.
    let refused = project.cachectl(
        &["hash", "--install-in", "host", "--capture", "changes"],
        &env,
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("install_in"), "{}", refused.stderr);
}
