//! Installing the npm packages that package layers must build, each into
//! a folder of its own (`work/pkgs/N`, its root the install prefix, the
//! package at its lock path):
//!
//! - a package without install scripts is its registry tarball, unpacked
//!   as npm unpacks it: fetched here (as many at once as is polite),
//!   checked against the lock's integrity, the first path part stripped,
//!   links and folders' own entries skipped, `.gitignore` named
//!   `.npmignore`, modes `0644` or `0755`, its executables made
//!   executable with a Windows shebang line ending fixed;
//! - a package with install scripts, or one whose tarball cannot be
//!   fetched from here (a private registry's credentials are the image's
//!   `.npmrc`'s, a `git` or `file:` dependency), comes from one run of the
//!   whole `npm ci` inside the image: its folder without the packages
//!   nested in it. When that run is needed, every package to build comes
//!   from it (npm downloads them all anyway).

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use futures::StreamExt as _;
use sha2::Digest as _;

use super::BuildError;
use super::package_install::InImage;
use crate::packages::npm::{NpmInstall, NpmPackage, NpmPlan};
use crate::packages::plan::{ArtifactHash, Tie};

/// Tarballs fetched at once.
const FETCHES: usize = 8;

/// Installs `packages` (indexes into `plan`) into `work/pkgs/N`.
pub async fn install(
    in_image: &impl InImage,
    npm: &NpmInstall,
    plan: &NpmPlan,
    packages: &[usize],
    work: &Path,
) -> Result<(), BuildError> {
    let (mut native, mut whole): (Vec<usize>, Vec<usize>) = packages.iter().partition(|&&at| {
        let package = &plan.plan.packages[at];
        package.tie == Tie::Interpreter
            && fetchable(&package.artifact.url)
            && strongest(package.artifact.hash.as_ref()).is_some()
    });
    // When npm ci runs anyway, it downloads every package of the lock:
    // it installs them all rather than their tarballs being fetched twice.
    if !whole.is_empty() {
        whole.append(&mut native);
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| BuildError::Base(format!("an HTTP client for npm tarballs: {e}")))?;
    let fetches = native.iter().map(|&at| {
        let client = &client;
        async move {
            (
                at,
                fetch(client, &plan.plan.packages[at].artifact.url).await,
            )
        }
    });
    let mut fetched = futures::stream::iter(fetches).buffer_unordered(FETCHES);
    let mut unpacks = Vec::new();
    while let Some((at, body)) = fetched.next().await {
        let package = &plan.plan.packages[at];
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(package = %package.name, %error, "tarball not fetched here: npm installs it in the image");
                whole.push(at);
                continue;
            }
        };
        let Some(expected) = strongest(package.artifact.hash.as_ref()) else {
            whole.push(at);
            continue;
        };
        if !expected.matches(&body) {
            return Err(BuildError::Base(format!(
                "{}@{}: the tarball from {} does not match the lock's integrity",
                package.name, package.version, package.artifact.url
            )));
        }
        let target = work.join(format!("pkgs/{at}"));
        let npm_package = plan.packages[at].clone();
        unpacks.push(tokio::task::spawn_blocking(move || {
            unpack(&body, &target, &npm_package)
        }));
    }
    for unpacked in futures::future::join_all(unpacks).await {
        unpacked
            .map_err(|e| BuildError::io("unpacking an npm tarball")(std::io::Error::other(e)))?
            .map_err(BuildError::io("unpacking an npm tarball"))?;
    }
    if whole.is_empty() {
        return Ok(());
    }
    whole.sort_unstable();
    tracing::debug!(packages = whole.len(), "npm ci in the image");
    let out = work.join("whole");
    std::fs::create_dir_all(&out).map_err(BuildError::io("creating a folder"))?;
    let command = npm
        .whole_step()
        .replace("{out}", &out.display().to_string());
    in_image.run(&out, &command).await?;
    let installed = out.join(&npm.prefix);
    let planned: HashSet<&str> = plan.packages.iter().map(|p| p.path.as_str()).collect();
    for at in whole {
        let path = &plan.packages[at].path;
        let from = installed.join(path);
        if !from.is_dir() {
            return Err(BuildError::Base(format!(
                "npm ci did not install {} where the lock says ({path})",
                plan.plan.packages[at].name
            )));
        }
        let to = work.join(format!("pkgs/{at}")).join(path);
        move_package(&from, &to, path, &planned)
            .map_err(BuildError::io("taking a package from npm ci"))?;
    }
    Ok(())
}

fn fetchable(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<bytes::Bytes, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await
}

/// One hash of an integrity string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    algorithm: &'static str,
    digests: Vec<Vec<u8>>,
}

impl Expected {
    fn matches(&self, body: &[u8]) -> bool {
        let actual: Vec<u8> = match self.algorithm {
            "sha512" => sha2::Sha512::digest(body).to_vec(),
            "sha384" => sha2::Sha384::digest(body).to_vec(),
            _ => sha2::Sha256::digest(body).to_vec(),
        };
        self.digests.contains(&actual)
    }
}

/// The strongest hash of an SRI string npm checks (`sha512` over
/// `sha384` over `sha256`); `None` for another kind of hash, or only
/// `sha1` (old locks: npm in the image checks those).
fn strongest(hash: Option<&ArtifactHash>) -> Option<Expected> {
    let Some(ArtifactHash::Integrity(integrity)) = hash else {
        return None;
    };
    ["sha512", "sha384", "sha256"]
        .into_iter()
        .find_map(|algorithm| {
            let digests: Vec<Vec<u8>> = integrity
                .split_whitespace()
                .filter_map(|item| item.strip_prefix(algorithm)?.strip_prefix('-'))
                .filter_map(|value| {
                    let value = value.split('?').next().unwrap_or(value);
                    base64::engine::general_purpose::STANDARD.decode(value).ok()
                })
                .collect();
            (!digests.is_empty()).then_some(Expected { algorithm, digests })
        })
}

/// Unpacks the tarball `body` of `package` into `root/PATH` as npm does.
fn unpack(body: &[u8], root: &Path, package: &NpmPackage) -> std::io::Result<()> {
    let folder = root.join(&package.path);
    std::fs::create_dir_all(&folder)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(body));
    let mut npmignores: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue; // folders are made as needed; links are not unpacked
        }
        let path = entry.path()?.into_owned();
        let mut parts = path.components();
        parts.next(); // `package/`, whatever it is called
        let relative: PathBuf = parts.as_path().to_owned();
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|part| matches!(part, Component::Normal(_)))
        {
            continue;
        }
        let relative = match relative.file_name().and_then(|name| name.to_str()) {
            Some(".npmignore") => {
                npmignores.insert(relative.clone());
                relative
            }
            Some(".gitignore") => {
                let renamed = relative.with_file_name(".npmignore");
                if npmignores.contains(&renamed) {
                    continue;
                }
                renamed
            }
            _ => relative,
        };
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut content = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut content)?;
        let destination = folder.join(&relative);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(&destination).is_ok() {
            std::fs::remove_file(&destination)?;
        }
        std::fs::write(&destination, &content)?;
        let executable = mode & 0o111 != 0;
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&destination, std::fs::Permissions::from_mode(mode))?;
    }
    // bin-links: each executable made executable, its shebang line ended
    // with a bare newline.
    for (_, target) in &package.bins {
        let file = folder.join(target);
        let Ok(mut content) = std::fs::read(&file) else {
            continue;
        };
        if content.starts_with(b"#!")
            && let Some(end) = content.iter().position(|&b| b == b'\n')
            && end > 0
            && content[end - 1] == b'\r'
        {
            content.remove(end - 1);
            std::fs::write(&file, &content)?;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Moves the package at `path` (in `from`) to `to`, without the packages
/// nested in it (`planned` paths) and their `.bin` links.
fn move_package(
    from: &Path,
    to: &Path,
    path: &str,
    planned: &HashSet<&str>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child = format!("{path}/{name}");
        let source = entry.path();
        let destination = to.join(&*name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if planned.contains(child.as_str())
                || (name == ".bin" && path.ends_with("/node_modules"))
            {
                continue;
            }
            move_package(&source, &destination, &child, planned)?;
        } else {
            std::fs::rename(&source, &destination)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (path, content, mode) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_cksum();
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_tarball_unpacks_as_npm_unpacks_it() {
        let body = tarball(&[
            ("package/package.json", b"{}", 0o600),
            (
                "package/bin/cli.js",
                b"#!/usr/bin/env node\r\nrun()\r\n",
                0o644,
            ),
            ("package/lib/x.sh", b"echo", 0o775),
            ("package/.gitignore", b"a", 0o644),
            ("package/sub/.npmignore", b"b", 0o644),
            ("package/sub/.gitignore", b"c", 0o644),
        ]);
        let root = tempfile::tempdir().unwrap();
        let package = NpmPackage {
            path: "node_modules/tool".into(),
            bins: vec![("tool".into(), "bin/cli.js".into())],
        };
        unpack(&body, root.path(), &package).unwrap();
        let at = root.path().join("node_modules/tool");
        let mode = |path: &str| {
            std::fs::metadata(at.join(path))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("package.json"), 0o644);
        assert_eq!(mode("lib/x.sh"), 0o755);
        assert_eq!(mode("bin/cli.js"), 0o755);
        assert_eq!(
            std::fs::read(at.join("bin/cli.js")).unwrap(),
            b"#!/usr/bin/env node\nrun()\r\n"
        );
        assert_eq!(std::fs::read(at.join(".npmignore")).unwrap(), b"a");
        assert!(!at.join(".gitignore").exists());
        assert_eq!(std::fs::read(at.join("sub/.npmignore")).unwrap(), b"b");
    }

    #[test]
    fn integrity_is_checked_by_its_strongest_hash() {
        let body = b"tarball";
        let sri = |algorithm: &str, digest: &[u8]| {
            format!(
                "{algorithm}-{}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        let sha512 = sri("sha512", &sha2::Sha512::digest(body));
        let sha1ish = "sha1-AAAA";
        let both = ArtifactHash::Integrity(format!("{sha1ish} {sha512}"));
        assert!(strongest(Some(&both)).unwrap().matches(body));
        assert!(!strongest(Some(&both)).unwrap().matches(b"other"));
        assert_eq!(
            strongest(Some(&ArtifactHash::Integrity(sha1ish.into()))),
            None
        );
        assert_eq!(strongest(Some(&ArtifactHash::Sha256("00".into()))), None);
    }
}
