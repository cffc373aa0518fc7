//! `from` images as the ecosystem writes them, used by the native builder
//! and run. Each image holds a real userland (busybox and its applets) and
//! a file `/etc/release`; the install step runs inside it, and the built
//! base is unpacked with umoci and run with `chroot`.
//!
//! The layers come from the tools users have: umoci 0.4.7 (whose layers end
//! without the tar end-of-archive marker, and without the padding of their
//! last entry), skopeo recompressing them as gzip and as zstd, buildah, and
//! hand-made layers: a tar without the marker, and a gzip of several
//! members (two `gzip` runs concatenated, as multi-member writers produce).
//! A layer whose stream is cut inside an entry is refused, naming the layer.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::oci_digest as sha256;
use cachectl_e2e::process::run_tool as run;
use cachectl_e2e::registry::RegistryServer;

const RELEASE: &str = "release from a hand-made userland\n";
const APPLETS: [&str; 6] = ["sh", "cat", "echo", "mkdir", "cp", "true"];

/// A folder with `bin/busybox`, its applets as links, and `etc/release`.
fn userland(into: &Path) -> PathBuf {
    let root = into.join("ROOT");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/release"), RELEASE).unwrap();
    root
}

/// An OCI layout at `layout` made with umoci: `umoci insert` of the
/// userland's `bin` then its `etc`, as the tool's users do. Returns
/// `layout:v1`.
fn umoci_image(work: &Path) -> String {
    let root = userland(work);
    let layout = work.join("umoci-layout");
    let image = format!("{}:v1", layout.display());
    run(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
        &[],
    );
    run("umoci", &["new", "--image", &image], &[]);
    for part in ["bin", "etc"] {
        let source = root.join(part).display().to_string();
        run(
            "umoci",
            &["insert", "--image", &image, &source, &format!("/{part}")],
            &[],
        );
    }
    image
}

/// The decompressed tar of each layer of the image `layout:tag`.
fn layer_tars(layout: &Path, tag: &str) -> Vec<Vec<u8>> {
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("the tag is in the layout");
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(manifest["digest"].as_str().unwrap())).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let bytes = blob(layer["digest"].as_str().unwrap());
            let mut tar = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut tar)
                .unwrap();
            tar
        })
        .collect()
}

/// Copies `source` (a skopeo reference) to `registry/lib/{name}:1` with
/// `extra` options, and returns the registry reference.
fn copy_to(registry: &RegistryServer, source: &str, name: &str, extra: &[&str]) -> String {
    let destination = format!("{}/lib/{name}:1", registry.host());
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    let target = format!("docker://{destination}");
    args.extend([source, target.as_str()]);
    run("skopeo", &args, &[]);
    destination
}

/// One layer of the hand-made image: its blob and media type, and the
/// digest of its tar.
struct Layer {
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: String,
}

/// An OCI layout at `layout` holding one image, tagged `v1`, of `layers`.
fn hand_made_layout(layout: &Path, layers: &[Layer]) -> String {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let store = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        digest
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": store(&config),
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type,
            "digest": store(&l.blob),
            "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": store(&manifest),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "v1" },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    format!("oci:{}:v1", layout.display())
}

/// The userland as one tar, written by the `tar` crate, with `etc/release`
/// last; and the offset where that entry's data ends (what follows is its
/// padding and the end-of-archive marker).
fn userland_tar() -> (Vec<u8>, usize) {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |path: &str, kind: tar::EntryType, mode: u32, size: usize| {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        header
    };
    for folder in ["bin", "etc"] {
        let h = header(folder, tar::EntryType::Directory, 0o755, 0);
        builder.append(&h, std::io::empty()).unwrap();
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let h = header("bin/busybox", tar::EntryType::Regular, 0o755, busybox.len());
    builder.append(&h, busybox.as_slice()).unwrap();
    for applet in APPLETS {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        builder.append(&h, std::io::empty()).unwrap();
    }
    let h = header("etc/release", tar::EntryType::Regular, 0o644, RELEASE.len());
    builder.append(&h, RELEASE.as_bytes()).unwrap();
    let tar = builder.into_inner().unwrap();
    let padded = RELEASE.len().div_ceil(512) * 512;
    let data_end = tar.len() - 1024 - padded + RELEASE.len();
    (tar, data_end)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    output.stdout
}

/// A native base `from` the image, whose install step runs inside it.
fn project_from(registry: &RegistryServer, from: &str) -> (Project, String) {
    let image = format!("{}/acme/from-test", registry.host());
    let project = Project::new();
    project.write("deps.txt", "one\n");
    project.write(
        "cachectl.toml",
        &format!(
            r#"[base]
image = "{image}"
manifests = ["deps.txt"]
builder = "native"
from = "{from}"
install = "mkdir -p {{out}}/opt && cat /etc/release deps.txt > {{out}}/opt/built"
platform = "linux/amd64"
"#
        ),
    );
    (project, image)
}

/// The root filesystem of the registry image `image`, unpacked by umoci
/// (which reads only gzip layers: skopeo recompresses the others).
fn unpack_gzip(image: &str, into: &Path) -> PathBuf {
    let layout = format!("{}:unpacked", into.join("layout").display());
    let bundle = into.join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
            &format!("docker://{image}"),
            &format!("oci:{layout}"),
        ],
        &[],
    );
    run(
        "umoci",
        &["unpack", "--image", &layout, &bundle.display().to_string()],
        &[],
    );
    bundle.join("rootfs")
}

/// Builds a base `from` the image with the native builder, runs the built
/// image and checks that the install step saw the image's files.
fn builds_and_runs(registry: &RegistryServer, from: &str) {
    let (project, image) = project_from(registry, from);
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built", "{built}");
    let key16 = &built["key"].as_str().unwrap()[..16];
    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = unpack_gzip(&format!("{image}:base-{key16}"), unpacked.path());
    let output = run(
        "chroot",
        &[
            &rootfs.display().to_string(),
            "/bin/sh",
            "-c",
            "cat /opt/built && echo ran in the image",
        ],
        &[],
    );
    assert_eq!(output, format!("{RELEASE}one\nran in the image\n"));
}

#[test]
fn a_umoci_image_whose_layers_have_no_end_of_archive_marker_is_a_from_image() {
    let registry = RegistryServer::start();
    let work = tempfile::tempdir().unwrap();
    let image = umoci_image(work.path());
    // What makes the case: umoci's last layer stops right after the data
    // of `etc/release`, without padding or marker.
    let tars = layer_tars(&work.path().join("umoci-layout"), "v1");
    let last = tars.last().expect("umoci wrote layers");
    assert!(
        last.ends_with(RELEASE.as_bytes()) && !last.len().is_multiple_of(512),
        "umoci now writes the end-of-archive marker ({} bytes): this test no longer tests the case",
        last.len()
    );
    let from = copy_to(&registry, &format!("oci:{image}"), "umoci", &[]);
    builds_and_runs(&registry, &from);
}

#[test]
fn skopeo_recompressed_layers_gzip_and_zstd_are_from_images() {
    let registry = RegistryServer::start();
    let work = tempfile::tempdir().unwrap();
    let image = format!("oci:{}", umoci_image(work.path()));
    // skopeo decompresses umoci's layers, then compresses them itself, into
    // layouts (a registry destination could reuse a blob it already has).
    let layout = |name: &str| format!("oci:{}:v1", work.path().join(name).display());
    let skopeo = |source: &str, destination: &str, extra: &[&str]| {
        let mut args = vec!["copy"];
        args.extend_from_slice(extra);
        args.extend([source, destination]);
        run("skopeo", &args, &[]);
    };
    skopeo(&image, &layout("plain"), &["--dest-decompress"]);
    for format in ["gzip", "zstd"] {
        skopeo(
            &layout("plain"),
            &layout(format),
            &["--dest-compress", "--dest-compress-format", format],
        );
        let manifest = run("skopeo", &["inspect", "--raw", &layout(format)], &[]);
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert!(
            layers.iter().all(|layer| layer["mediaType"]
                .as_str()
                .is_some_and(|media_type| media_type.ends_with(&format!("+{format}")))),
            "{manifest}"
        );
        let from = copy_to(&registry, &layout(format), &format!("skopeo-{format}"), &[]);
        builds_and_runs(&registry, &from);
    }
}

#[test]
fn a_buildah_image_is_a_from_image() {
    let registry = RegistryServer::start();
    let work = tempfile::tempdir().unwrap();
    let root = userland(work.path());
    let storage = work.path().join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
            work.path().display()
        ),
    )
    .unwrap();
    let storage = storage.display().to_string();
    let env = [
        ("CONTAINERS_STORAGE_CONF", storage.as_str()),
        ("BUILDAH_ISOLATION", "chroot"),
    ];
    let container = run("buildah", &["from", "scratch"], &env);
    let container = container.trim();
    run(
        "buildah",
        &["copy", container, &root.display().to_string(), "/"],
        &env,
    );
    let from = format!("{}/lib/buildah:1", registry.host());
    run(
        "buildah",
        &[
            "commit",
            "--tls-verify=false",
            container,
            &format!("docker://{from}"),
        ],
        &env,
    );
    builds_and_runs(&registry, &from);
}

#[test]
fn a_hand_made_tar_without_marker_and_a_multi_member_gzip_are_from_images() {
    let registry = RegistryServer::start();
    let work = tempfile::tempdir().unwrap();
    let (tar, data_end) = userland_tar();

    // Uncompressed, cut right after the last entry's data.
    let bare = &tar[..data_end];
    let layout = hand_made_layout(
        &work.path().join("bare"),
        &[Layer {
            blob: bare.to_vec(),
            media_type: "application/vnd.oci.image.layer.v1.tar",
            diff_id: sha256(bare),
        }],
    );
    let from = copy_to(&registry, &layout, "hand-made-tar", &[]);
    builds_and_runs(&registry, &from);

    // Two gzip members, split inside busybox's data: a reader that stops
    // after the first member sees an archive cut short.
    let middle = 512 * 4 + 1000;
    let mut members = gzip(&tar[..middle]);
    members.extend(gzip(&tar[middle..]));
    let layout = hand_made_layout(
        &work.path().join("multi"),
        &[Layer {
            blob: members,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id: sha256(&tar),
        }],
    );
    let from = copy_to(&registry, &layout, "multi-member", &[]);
    builds_and_runs(&registry, &from);
}

#[test]
fn a_layer_cut_inside_an_entry_is_refused_naming_the_layer_and_the_entry() {
    let registry = RegistryServer::start();
    let work = tempfile::tempdir().unwrap();
    let (tar, _) = userland_tar();
    // Inside busybox's data: its header is the third block.
    let cut = &tar[..512 * 3 + 4096];
    let blob = gzip(cut);
    let digest = sha256(&blob);
    let layout = hand_made_layout(
        &work.path().join("cut"),
        &[Layer {
            blob,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id: sha256(cut),
        }],
    );
    let from = copy_to(&registry, &layout, "cut", &[]);
    let (project, _) = project_from(&registry, &from);
    let failed = project.cachectl(&["ensure-base", "--json"], &[]);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(
        failed.stderr.contains(&digest) && failed.stderr.contains("ends inside bin/busybox"),
        "{}",
        failed.stderr
    );
    // Nothing half-unpacked is kept for the next build to reuse.
    let rootfs = project.path().join(".cachectl/rootfs");
    let kept: Vec<_> = std::fs::read_dir(&rootfs)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.len() == 64)
                .collect()
        })
        .unwrap_or_default();
    assert!(kept.is_empty(), "{kept:?}");
}
