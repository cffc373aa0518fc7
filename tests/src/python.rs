//! Real userlands for the native builder's tests, the examples' and the
//! benchmarks: the Debian images (python3 and pip; nodejs; nodejs and npm) that
//! `scripts/install-test-deps` makes with `mmdebstrap`, and a small wheel
//! with a console script.

use std::path::Path;
use std::process::Command;

use crate::bins::deps_dir;
use crate::registry::RegistryServer;

/// Pushes the Debian python image to `registry` as
/// `library/python:3-bookworm`; returns the reference.
pub fn push_python_image(registry: &RegistryServer) -> String {
    push_test_image(registry, "python-image:python", "library/python:3-bookworm")
}

/// Pushes the Debian image with nodejs that `scripts/install-test-deps`
/// makes to `registry` as `library/node:bookworm`; returns its reference.
pub fn push_node_image(registry: &RegistryServer) -> String {
    push_test_image(registry, "node-image:node", "library/node:bookworm")
}

/// Pushes the Debian image with nodejs and npm 10 in /usr/local (as the
/// official Node images have it) to `registry` as
/// `library/node:bookworm-npm`; returns its reference.
pub fn push_node_npm_image(registry: &RegistryServer) -> String {
    push_test_image(registry, "node-npm-image:node", "library/node:bookworm-npm")
}

/// Writes the package.json and package-lock.json of `tests/npm/PLAN`
/// (`plan`, or `bumped` with semver 7.7.1) into `project`: the npm
/// package-layer tests' and benchmark's project, whose tarballs
/// `scripts/install-test-deps` fetches.
pub fn write_npm_plan(project: &crate::cachectl::Project, plan: &str) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("npm").join(plan);
    for file in ["package.json", "package-lock.json"] {
        let text = std::fs::read_to_string(folder.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", folder.join(file).display()));
        project.write(file, &text);
    }
}

/// Pushes `LAYOUT:NAME` of the test dependencies to `registry` as
/// `repository:tag`; returns the reference.
fn push_test_image(registry: &RegistryServer, layout_and_name: &str, repository: &str) -> String {
    let reference = format!("{}/{repository}", registry.host());
    let source = deps_dir().join(layout_and_name);
    let output = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", source.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "pushing {layout_and_name} (run scripts/install-test-deps): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    reference
}

/// The wheel [`write_hello_wheel`] writes, relative to its folder.
pub const HELLO_WHEEL: &str = "wheels/hello-1.0-py3-none-any.whl";

/// Writes `HELLO_WHEEL` under `folder`: a package whose console script
/// `hello` prints the interpreter running it. Made by the host's python3.
pub fn write_hello_wheel(folder: &Path) {
    let wheel = folder.join(HELLO_WHEEL);
    std::fs::create_dir_all(wheel.parent().expect("a folder")).expect("creating wheels/");
    let script = r#"
import sys, zipfile
files = {
    "hello/__init__.py": "import sys\ndef main():\n    print('hello from', sys.executable)\n",
    "hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello\nVersion: 1.0\n",
    "hello-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "hello-1.0.dist-info/entry_points.txt": "[console_scripts]\nhello = hello:main\n",
}
record = "".join(f"{name},,\n" for name in files) + "hello-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as wheel:
    for name, text in files.items():
        wheel.writestr(name, text)
    wheel.writestr("hello-1.0.dist-info/RECORD", record)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "writing the wheel failed");
}

/// The package-layer tests' requirements (and `package-bench`'s), every
/// one pinned: 18 PyPI packages whose wheels `scripts/install-test-deps`
/// fetches once (`tests/wheels.txt`).
pub const PYPI_REQUIREMENTS: &str = "\
flask==3.0.3
werkzeug==3.0.6
jinja2==3.1.4
markupsafe==2.1.5
itsdangerous==2.2.0
click==8.1.7
blinker==1.8.2
pillow==11.0.0
zope.interface==7.1.1
zope.event==5.0
setuptools==75.3.0
requests==2.32.3
urllib3==2.2.3
idna==3.10
certifi==2024.8.30
charset-normalizer==3.4.0
six==1.16.0
packaging==24.1
";

/// Copies the wheels of [`PYPI_REQUIREMENTS`] (and `six` 1.17.0, the
/// bump) into `folder/wheels`.
pub fn write_pypi_wheels(folder: &Path) {
    let wheels = folder.join("wheels");
    std::fs::create_dir_all(&wheels).expect("creating wheels/");
    let source = deps_dir().join("pypi-wheels");
    for entry in std::fs::read_dir(&source)
        .unwrap_or_else(|e| panic!("{} (run scripts/install-test-deps): {e}", source.display()))
    {
        let entry = entry.expect("a wheel");
        if entry.file_name().to_string_lossy().ends_with(".whl") {
            std::fs::copy(entry.path(), wheels.join(entry.file_name())).expect("copying a wheel");
        }
    }
}
