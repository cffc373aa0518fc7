//! A real OCI registry (Debian's `docker-registry`, CNCF distribution) on a
//! loopback port with its storage in a temporary folder, and a busybox base
//! image pushed into it with `umoci` and `skopeo` (tools we did not write).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::bins::service_binary;
use crate::process::{Service, free_port, wait_for_tcp};

/// A running registry, stopped on drop.
pub struct RegistryServer {
    dir: TempDir,
    address: SocketAddr,
    _service: Service,
    _htpasswd_dir: Option<TempDir>,
}

impl RegistryServer {
    /// Starts a registry with deletes enabled and no auth.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a registry that accepts only `user` with `password` (bcrypt
    /// htpasswd entry made by Debian's `htpasswd`).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = dir.path().join("htpasswd");
        let output = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd runs (apache2-utils)");
        assert!(output.status.success());
        std::fs::write(&file, output.stdout).expect("writing htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: cachectl-test\n    path: {}\n",
            file.display()
        );
        let mut server = Self::start_with(&auth);
        server._htpasswd_dir = Some(dir);
        server
    }

    fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        for _ in 0..5 {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = dir.path().join("config.yml");
            let storage = dir.path().join("storage");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{extra}",
                    storage.display()
                ),
            )
            .expect("writing the registry config");
            let mut command = Command::new(service_binary("docker-registry", "docker-registry"));
            command.arg("serve").arg(&config);
            let mut service = Service::spawn("docker-registry", command);
            if wait_for_tcp(address, Duration::from_secs(10)) && !service.has_exited() {
                return Self {
                    dir,
                    address,
                    _service: service,
                    _htpasswd_dir: None,
                };
            }
        }
        panic!("docker-registry did not start on any of 5 free ports");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// The registry's storage folder.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (run scripts/install-test-deps)"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds a busybox image (a real shell and coreutils in one static binary)
/// with umoci and pushes it with skopeo to `registry/repository:tag`.
/// Returns the pushed reference.
pub fn push_busybox(registry: &RegistryServer, repository: &str, tag: &str) -> String {
    let work = tempfile::tempdir().expect("temporary folder");
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    let image = format!("{}:busybox", layout.display());
    run(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run("umoci", &["new", "--image", &image]);
    run(
        "umoci",
        &["unpack", "--image", &image, &bundle.display().to_string()],
    );
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copying /bin/busybox");
    for applet in ["sh", "ls", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    run(
        "umoci",
        &["repack", "--image", &image, &bundle.display().to_string()],
    );
    run(
        "umoci",
        &["config", "--image", &image, "--config.cmd", "/bin/sh"],
    );
    let destination = format!("{}/{repository}:{tag}", registry.host());
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &format!("docker://{destination}"),
        ],
    );
    destination
}

/// `skopeo inspect` (or `--config`) of `image` (`docker://…` or `oci:…`), as JSON.
pub fn skopeo_inspect(image: &str, config: bool) -> serde_json::Value {
    let mut args = vec!["inspect", "--tls-verify=false"];
    if config {
        args.push("--config");
    }
    args.push(image);
    let output = Command::new("skopeo")
        .args(&args)
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "skopeo inspect {image} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("skopeo prints JSON")
}

/// Copies `image` into a fresh OCI layout and unpacks it with umoci;
/// returns the folder holding the bundle (`rootfs/` inside).
pub fn unpack(image: &str, into: &Path) -> std::path::PathBuf {
    let layout = into.join("layout");
    let bundle = into.join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            image,
            &format!("oci:{}:unpacked", layout.display()),
        ],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:unpacked", layout.display()),
            &bundle.display().to_string(),
        ],
    );
    bundle
}
