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
    service: Service,
    _htpasswd_dir: Option<TempDir>,
}

impl RegistryServer {
    /// Starts a registry with deletes enabled and no auth.
    pub fn start() -> Self {
        Self::start_with("", true)
    }

    /// Starts a registry that refuses deletes (distribution's default, and
    /// what many hosted registries do through their API).
    pub fn start_without_deletes() -> Self {
        Self::start_with("", false)
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
        let mut server = Self::start_with(&auth, true);
        server._htpasswd_dir = Some(dir);
        server
    }

    fn start_with(extra: &str, deletes: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        for _ in 0..5 {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = dir.path().join("config.yml");
            let storage = dir.path().join("storage");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {deletes}\nhttp:\n  addr: {address}\n{extra}",
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
                    service,
                    _htpasswd_dir: None,
                };
            }
        }
        panic!("docker-registry did not start on any of 5 free ports");
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// The bytes of every blob the registry stores (its storage's `data`
    /// files): what its blob uploads received, measured on its side.
    pub fn stored_blob_bytes(&self) -> u64 {
        fn size(path: &std::path::Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return 0;
            };
            if meta.is_dir() {
                return std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|entry| size(&entry.path()))
                    .sum();
            }
            if path.file_name().is_some_and(|name| name == "data") {
                meta.len()
            } else {
                0
            }
        }
        size(&self.dir.path().join("storage/docker/registry/v2/blobs"))
    }

    /// How many blob uploads (`POST /v2/.../blobs/uploads/`) the registry
    /// has logged, mounts included, once its log has been quiet for 300 ms
    /// (access lines are written after the response).
    pub fn blob_upload_requests(&self) -> usize {
        self.logged_requests(|line| {
            line.contains("\"POST /v2/") && line.contains("/blobs/uploads/")
        })
    }

    /// How many `GET /v2/` version checks (the probe for an authentication
    /// challenge) the registry has logged, once its log has been quiet.
    pub fn version_probes(&self) -> usize {
        self.logged_requests(|line| line.contains("\"GET /v2/ HTTP"))
    }

    /// How many requests whose access line contains `text` (say
    /// `"GET /v2/acme/base/manifests/sha256:`) the registry has logged, once
    /// its log has been quiet.
    pub fn requests_containing(&self, text: &str) -> usize {
        self.logged_requests(|line| line.contains(text))
    }

    /// How many blob existence checks (`HEAD /v2/.../blobs/...`) the
    /// registry has logged, once its log has been quiet.
    pub fn blob_checks(&self) -> usize {
        self.logged_requests(|line| line.contains("\"HEAD /v2/") && line.contains("/blobs/"))
    }

    /// How many manifest reads the registry refused with 401 (anonymous
    /// reads of a registry that needs credentials), once its log has been
    /// quiet.
    pub fn refused_manifest_reads(&self) -> usize {
        self.logged_requests(|line| line.contains("/manifests/") && line.contains("\" 401 "))
    }

    /// Removes blob `digest` from `repository` (`DELETE /v2/.../blobs/`:
    /// the repository's link to it; other repositories keep theirs), as a
    /// registry's retention or an operator may. Panics unless accepted.
    pub fn delete_blob(&self, repository: &str, digest: &str) {
        let request = format!(
            "DELETE /v2/{repository}/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        );
        let outcome =
            crate::raw_http::exchange(self.address, request.as_bytes(), Duration::from_secs(10));
        assert_eq!(
            outcome.status(),
            Some(202),
            "deleting {digest} from {repository}"
        );
    }

    /// How many access lines matching `request` the registry has logged,
    /// once its log has been quiet for 300 ms.
    fn logged_requests(&self, request: impl Fn(&str) -> bool) -> usize {
        let count = || {
            let text = self.service.output().text();
            let matching = text.lines().filter(|line| request(line)).count();
            (text.len(), matching)
        };
        let mut last = count();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = count();
            if now == last {
                return now.1;
            }
            last = now;
        }
    }

    /// The registry's storage folder.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    /// Runs the registry's own garbage collection as `cachectl gc` tells
    /// users to (`docker-registry garbage-collect CONFIG`, without
    /// `--delete-untagged`) on its storage, which reclaims the blobs of
    /// deleted manifests. Nothing may push meanwhile.
    pub fn garbage_collect(&self) -> String {
        let output = Command::new(service_binary("docker-registry", "docker-registry"))
            .arg("garbage-collect")
            .arg(self.dir.path().join("config.yml"))
            .output()
            .expect("docker-registry runs");
        assert!(
            output.status.success(),
            "garbage-collect failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The tags of `repository`, as `skopeo list-tags` sees them, sorted.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let output = Command::new("skopeo")
            .args(["list-tags", "--tls-verify=false"])
            .arg(format!("docker://{}/{repository}", self.host()))
            .output()
            .expect("skopeo runs");
        assert!(
            output.status.success(),
            "skopeo list-tags: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("skopeo prints JSON");
        let mut tags: Vec<String> = listed["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        tags.sort();
        tags
    }
}

fn run(program: &str, args: &[&str]) {
    crate::process::run_tool(program, args, &[]);
}

/// Builds a busybox image (a real shell and coreutils in one static binary)
/// with umoci and pushes it with skopeo to `registry/repository:tag`.
/// Returns the pushed reference.
pub fn push_busybox(registry: &RegistryServer, repository: &str, tag: &str) -> String {
    push_busybox_release(registry, repository, tag, None)
}

/// Like [`push_busybox`], with a file `/etc/release` holding `release`
/// (when given), so that two pushes under one tag are two images, as when
/// an upstream publishes a patched image under the same tag.
pub fn push_busybox_release(
    registry: &RegistryServer,
    repository: &str,
    tag: &str,
    release: Option<&str>,
) -> String {
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
    // The applets the tests' install steps use, run inside the image.
    for applet in [
        "sh", "ls", "cat", "echo", "mkdir", "cp", "rm", "mv", "ln", "touch", "sleep", "env", "id",
        "test", "true", "false", "printf", "head", "wc", "grep", "sed", "chmod", "readlink",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    if let Some(release) = release {
        let etc = bundle.join("rootfs/etc");
        std::fs::create_dir_all(&etc).expect("rootfs/etc");
        std::fs::write(etc.join("release"), format!("{release}\n")).expect("writing /etc/release");
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

/// Pushes an image index with a linux/amd64 and a linux/arm64 image (each
/// busybox plus a file `/platform` naming its platform) to
/// `registry/repository:tag`. Returns the reference.
pub fn push_multi_platform(registry: &RegistryServer, repository: &str, tag: &str) -> String {
    let work = tempfile::tempdir().expect("temporary folder");
    let layout = work.path().join("layout");
    run(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    let mut entries = Vec::new();
    for architecture in ["amd64", "arm64"] {
        let image = format!("{}:{architecture}", layout.display());
        let bundle = work.path().join(format!("bundle-{architecture}"));
        run("umoci", &["new", "--image", &image]);
        run(
            "umoci",
            &["unpack", "--image", &image, &bundle.display().to_string()],
        );
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs/bin");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copying busybox");
        std::fs::write(rootfs.join("platform"), format!("linux/{architecture}\n")).expect("marker");
        run(
            "umoci",
            &["repack", "--image", &image, &bundle.display().to_string()],
        );
        run(
            "umoci",
            &[
                "config",
                "--image",
                &image,
                "--architecture",
                architecture,
                "--os",
                "linux",
            ],
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let mut entry = index["manifests"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == architecture)
                    .cloned()
            })
            .expect("the tagged manifest");
        entry.as_object_mut().map(|e| e.remove("annotations"));
        entry["platform"] = serde_json::json!({ "os": "linux", "architecture": architecture });
        entries.push(entry);
    }
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let bytes = serde_json::to_vec(&image_index).expect("serialising the index");
    let staged = work.path().join("index-blob");
    std::fs::write(&staged, &bytes).expect("writing the index blob");
    let output = Command::new("sha256sum")
        .arg(&staged)
        .output()
        .expect("sha256sum");
    let hex = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned();
    std::fs::copy(&staged, layout.join("blobs/sha256").join(&hex)).expect("storing the index blob");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    if let Some(manifests) = index["manifests"].as_array_mut() {
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": "multi" }
        }));
    }
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("writing index.json");
    let destination = format!("{}/{repository}:{tag}", registry.host());
    run(
        "skopeo",
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", layout.display()),
            &format!("docker://{destination}"),
        ],
    );
    destination
}
