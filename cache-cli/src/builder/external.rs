//! Builders that are other programs. `buildah bud` and `podman build`
//! build, then export the image to a staging OCI layout, from which
//! cachectl pushes it like any other image (HEAD before every blob, its own
//! credentials and TLS settings, the bytes counted). `docker build` +
//! `docker push` push through the Docker daemon, which holds its own
//! registry settings. Their output streams to stderr.
//!
//! Storage and isolation of buildah and podman follow their own settings
//! (`STORAGE_DRIVER`, `CONTAINERS_STORAGE_CONF`, `BUILDAH_ISOLATION`, ...),
//! which pass through the environment unchanged; `builder_args` add any
//! other option to the build command.

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
    /// Tags to push (docker only: the others export to `staging`).
    pub tags: &'a [&'a str],
    /// The OCI layout buildah and podman export the image to, as `base`.
    pub staging: &'a Path,
    /// Ask the registry for a newer upstream image than the one in the
    /// builder's store (upstreams are tracked).
    pub pull: bool,
    /// Options added to the build command, before the context.
    pub builder_args: &'a [String],
    /// The base key, set as a label.
    pub key: &'a cache_proto::Key,
}

/// The name the image gets in the staging layout.
pub const STAGED_NAME: &str = "base";

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
    if spec.pull {
        // buildah's default already asks for a newer image; docker's and
        // podman's use whatever their store holds under the tag.
        match spec.kind {
            BuilderKind::Docker => build.push("--pull".into()),
            BuilderKind::Podman => build.push("--pull=newer".into()),
            BuilderKind::Buildah | BuilderKind::Native => {}
        }
    }
    build.extend(spec.builder_args.iter().cloned());
    build.push(spec.root.join(spec.context).display().to_string());
    let mut lines = vec![(program.clone(), build)];

    if spec.kind != BuilderKind::Docker {
        lines.push((
            program,
            vec![
                "push".into(),
                local_name,
                format!("oci:{}:{STAGED_NAME}", spec.staging.display()),
            ],
        ));
        return Ok(lines);
    }
    let ImageTarget::Registry(_) = spec.target else {
        return Err(BuildError::Base(
            "the docker builder cannot write an oci: layout; use buildah, podman or native".into(),
        ));
    };
    for tag in spec.tags {
        let reference = destination(spec.target, tag);
        lines.push((
            program.clone(),
            vec!["tag".into(), local_name.clone(), reference.clone()],
        ));
        lines.push((program.clone(), vec!["push".into(), reference]));
    }
    Ok(lines)
}

/// Runs the build, then the export or the pushes, streaming their output,
/// with `env` on top of ours; returns the seconds spent building and
/// exporting or pushing.
pub async fn build(
    spec: &ExternalSpec<'_>,
    env: &[(String, String)],
) -> Result<(f64, f64), BuildError> {
    let root: PathBuf = spec.root.to_owned();
    let mut seconds = [0.0f64; 2];
    for (step, (program, args)) in commands(spec)?.into_iter().enumerate() {
        let started = std::time::Instant::now();
        run_streaming(&program, &args, &root, env).await?;
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
            staging: Path::new("/tmp/stage"),
            pull: true,
            builder_args: &[],
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
                    "docker build --file /src/Dockerfile.base --platform linux/arm64 --build-arg PYTHON=3.12 --label dev.cachectl.base-key={key} --tag cachectl-base:0101010101010101 --pull /src/"
                ),
                "docker tag cachectl-base:0101010101010101 registry.example.com/acme/web-base:base-0123456789abcdef".to_owned(),
                "docker push registry.example.com/acme/web-base:base-0123456789abcdef".to_owned(),
                "docker tag cachectl-base:0101010101010101 registry.example.com/acme/web-base:latest".to_owned(),
                "docker push registry.example.com/acme/web-base:latest".to_owned(),
            ]
        );
    }

    #[test]
    fn docker_refuses_a_layout_and_buildah_exports_to_the_staging_layout() {
        let layout = ImageTarget::Layout {
            dir: "/out/oci".into(),
            name: None,
        };
        let args = BTreeMap::new();
        let platform = Platform::parse("linux/amd64").unwrap();
        let key = cache_proto::Key::from_bytes([0x02; 32]);
        assert!(commands(&spec(BuilderKind::Docker, &layout, &args, &platform, &key)).is_err());
        let builder_args = ["--network=host".to_owned(), "--layers".to_owned()];
        let mut buildah = spec(BuilderKind::Buildah, &layout, &args, &platform, &key);
        buildah.builder_args = &builder_args;
        let lines = commands(&buildah).unwrap();
        assert_eq!(lines[0].1[0], "bud");
        assert_eq!(
            lines[0].1[lines[0].1.len() - 3..],
            ["--network=host", "--layers", "/src/"]
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[1].1,
            [
                "push",
                "cachectl-base:0202020202020202",
                "oci:/tmp/stage:base"
            ]
        );
        let podman = commands(&spec(BuilderKind::Podman, &layout, &args, &platform, &key)).unwrap();
        assert_eq!(
            (podman[0].0.as_str(), podman[0].1[0].as_str()),
            ("podman", "build")
        );
        assert!(podman[0].1.contains(&"--pull=newer".to_owned()));
    }
}
