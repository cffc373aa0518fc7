//! Builders that are other programs: `docker build` + `docker push`,
//! `buildah bud` + `buildah push`, `podman build` + `podman push`. Their
//! output streams to stderr; the pushed image is then looked up by tag.
//!
//! Storage and isolation of buildah and podman follow their own settings
//! (`STORAGE_DRIVER`, `CONTAINERS_STORAGE_CONF`, `BUILDAH_ISOLATION`, ...),
//! which pass through the environment unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{BuildError, BuilderKind, run_streaming};
use crate::image::ImageTarget;
use crate::image::oci::Platform;

/// What an external build needs.
#[derive(Debug, Clone)]
pub struct ExternalSpec<'a> {
    /// docker, buildah or podman.
    pub kind: BuilderKind,
    /// Project root: relative paths start there.
    pub root: &'a Path,
    /// The Dockerfile, relative to the root.
    pub dockerfile: &'a Path,
    /// The build context, relative to the root.
    pub context: &'a Path,
    /// Build arguments.
    pub args: &'a BTreeMap<String, String>,
    /// Target platform.
    pub platform: &'a Platform,
    /// Where the image goes.
    pub target: &'a ImageTarget,
    /// Tags to push.
    pub tags: &'a [&'a str],
    /// Whether to skip TLS verification (plain-HTTP or loopback registry).
    pub insecure: bool,
    /// The base key, set as a label.
    pub key: &'a cache_proto::Key,
}

/// One command line.
pub type CommandLine = (String, Vec<String>);

fn destination(target: &ImageTarget, tag: &str) -> String {
    match target {
        ImageTarget::Registry(repository) => format!("{repository}:{tag}"),
        ImageTarget::Layout { dir, .. } => format!("oci:{}:{tag}", dir.display()),
    }
}

/// The commands that build and push the image, in order.
pub fn commands(spec: &ExternalSpec<'_>) -> Result<Vec<CommandLine>, BuildError> {
    let program = spec.kind.name().to_owned();
    let local_name = format!("cachectl-base:{}", spec.key.short(16));
    let mut build = vec![match spec.kind {
        BuilderKind::Buildah => "bud".to_owned(),
        _ => "build".to_owned(),
    }];
    build.push("--file".into());
    build.push(spec.root.join(spec.dockerfile).display().to_string());
    build.push("--platform".into());
    build.push(spec.platform.to_string());
    for (name, value) in spec.args {
        build.push("--build-arg".into());
        build.push(format!("{name}={value}"));
    }
    build.push("--label".into());
    build.push(format!("{}={}", super::native::KEY_LABEL, spec.key));
    build.push("--tag".into());
    build.push(local_name.clone());
    build.push(spec.root.join(spec.context).display().to_string());
    let mut lines = vec![(program.clone(), build)];

    for tag in spec.tags {
        let push = match (spec.kind, spec.target) {
            (BuilderKind::Docker, ImageTarget::Layout { .. }) => {
                return Err(BuildError::Base(
                    "the docker builder cannot write an oci: layout; use buildah, podman or native"
                        .into(),
                ));
            }
            (BuilderKind::Docker, target) => {
                let reference = destination(target, tag);
                lines.push((
                    program.clone(),
                    vec!["tag".into(), local_name.clone(), reference.clone()],
                ));
                vec!["push".into(), reference]
            }
            (_, target) => {
                let mut push = vec!["push".to_owned()];
                if spec.insecure {
                    push.push("--tls-verify=false".into());
                }
                push.push(local_name.clone());
                let reference = destination(target, tag);
                push.push(match target {
                    ImageTarget::Registry(_) => format!("docker://{reference}"),
                    ImageTarget::Layout { .. } => reference,
                });
                push
            }
        };
        lines.push((program.clone(), push));
    }
    Ok(lines)
}

/// Runs the build, then the pushes, streaming their output; returns the
/// seconds spent building and pushing.
pub async fn build(spec: &ExternalSpec<'_>) -> Result<(f64, f64), BuildError> {
    if let ImageTarget::Layout { dir, .. } = spec.target {
        std::fs::create_dir_all(dir).map_err(BuildError::io("creating the OCI layout folder"))?;
    }
    let root: PathBuf = spec.root.to_owned();
    let mut seconds = [0.0f64; 2];
    for (step, (program, args)) in commands(spec)?.into_iter().enumerate() {
        let started = std::time::Instant::now();
        run_streaming(&program, &args, &root, &[]).await?;
        seconds[usize::from(step > 0)] += started.elapsed().as_secs_f64();
    }
    Ok((seconds[0], seconds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        kind: BuilderKind,
        target: &'a ImageTarget,
        args: &'a BTreeMap<String, String>,
        platform: &'a Platform,
        key: &'a cache_proto::Key,
    ) -> ExternalSpec<'a> {
        ExternalSpec {
            kind,
            root: Path::new("/src"),
            dockerfile: Path::new("Dockerfile.base"),
            context: Path::new(""),
            args,
            platform,
            target,
            tags: &["base-0123456789abcdef", "latest"],
            insecure: false,
            key,
        }
    }

    #[test]
    fn docker_builds_tags_and_pushes_every_tag() {
        let target = ImageTarget::Registry("registry.example.com/acme/web-base".into());
        let args = BTreeMap::from([("PYTHON".to_owned(), "3.12".to_owned())]);
        let platform = Platform::parse("linux/arm64").unwrap();
        let key = cache_proto::Key::from_bytes([0x01; 32]);
        let lines = commands(&spec(BuilderKind::Docker, &target, &args, &platform, &key)).unwrap();
        let rendered: Vec<String> = lines
            .iter()
            .map(|(program, args)| format!("{program} {}", args.join(" ")))
            .collect();
        assert_eq!(
            rendered,
            [
                format!(
                    "docker build --file /src/Dockerfile.base --platform linux/arm64 --build-arg PYTHON=3.12 --label dev.cachectl.base-key={key} --tag cachectl-base:0101010101010101 /src/"
                ),
                "docker tag cachectl-base:0101010101010101 registry.example.com/acme/web-base:base-0123456789abcdef".to_owned(),
                "docker push registry.example.com/acme/web-base:base-0123456789abcdef".to_owned(),
                "docker tag cachectl-base:0101010101010101 registry.example.com/acme/web-base:latest".to_owned(),
                "docker push registry.example.com/acme/web-base:latest".to_owned(),
            ]
        );
    }

    #[test]
    fn docker_refuses_a_layout_and_buildah_pushes_to_it() {
        let layout = ImageTarget::Layout {
            dir: "/out/oci".into(),
            name: None,
        };
        let args = BTreeMap::new();
        let platform = Platform::parse("linux/amd64").unwrap();
        let key = cache_proto::Key::from_bytes([0x02; 32]);
        assert!(commands(&spec(BuilderKind::Docker, &layout, &args, &platform, &key)).is_err());
        let lines = commands(&spec(BuilderKind::Buildah, &layout, &args, &platform, &key)).unwrap();
        assert_eq!(lines[0].1[0], "bud");
        assert_eq!(
            lines[1].1,
            [
                "push",
                "cachectl-base:0202020202020202",
                "oci:/out/oci:base-0123456789abcdef"
            ]
        );
        let podman = commands(&spec(BuilderKind::Podman, &layout, &args, &platform, &key)).unwrap();
        assert_eq!(
            (podman[0].0.as_str(), podman[0].1[0].as_str()),
            ("podman", "build")
        );
    }
}
