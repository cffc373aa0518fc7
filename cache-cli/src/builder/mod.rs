//! Builders of the base image.

pub mod changes;
pub mod external;
pub mod native;
pub mod npm_install;
pub mod package_install;
pub mod package_layers;
pub mod registries;
pub mod rootfs;
pub mod sandbox;
pub mod step;

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::exit::Exit;
use crate::image::registry::RegistryError;
use crate::invalid::Invalid;

/// The builders `base.builder` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    /// Daemonless: run `install` on the host, pack `{out}` as one layer.
    Native,
    /// `docker build` + `docker push`.
    Docker,
    /// `buildah bud` + `buildah push`.
    Buildah,
    /// `podman build` + `podman push`.
    Podman,
}

impl BuilderKind {
    /// Parses the configured name.
    pub fn parse(name: &str) -> Result<Self, Invalid> {
        match name {
            "native" => Ok(Self::Native),
            "docker" => Ok(Self::Docker),
            "buildah" => Ok(Self::Buildah),
            "podman" => Ok(Self::Podman),
            other => Err(Invalid(format!(
                "unknown builder {other:?} (use native, docker, buildah or podman)"
            ))),
        }
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Docker => "docker",
            Self::Buildah => "buildah",
            Self::Podman => "podman",
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The build command exited non-zero.
    /// Its output was streamed as it ran, so the message does not repeat
    /// it.
    #[error("`{command}` failed ({status}); its output is above (lines starting with `  | `)")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// The build command failed because it could not pull from or reach a
    /// registry (exit 3, like cachectl's own registry failures). The line
    /// that says so is repeated: it is the one the user needs.
    #[error("`{command}` failed ({status}) reaching a registry: {line}")]
    RegistryUnreachable {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The builder's line naming the registry failure.
        line: String,
    },
    /// The starting image is unusable.
    #[error("base image: {0}")]
    Base(String),
    /// A registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl BuildError {
    /// A registry's (see [`RegistryError::exit`]) or 3 for one that could
    /// not be reached; any other build failure is 1.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Registry(error) => error.exit(),
            Self::RegistryUnreachable { .. } => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

impl BuildError {
    /// An [`BuildError::Io`] maker for `map_err`.
    pub fn io(what: &str) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// Runs `program` in `dir`, streaming its stdout and stderr to our stderr
/// (stdout stays free for the result), each line prefixed with `  | `.
pub async fn run_streaming(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
) -> Result<(), BuildError> {
    let described = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    run_command_streaming(command, described).await
}

/// Runs `command` like [`run_streaming`]; `described` names it in errors.
pub async fn run_command_streaming(
    mut command: Command,
    described: String,
) -> Result<(), BuildError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BuildError::Io {
            what: format!("starting `{described}`"),
            source,
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(BuildError::Io {
            what: format!("reading the output of `{described}`"),
            source: std::io::Error::other("no pipes"),
        });
    };
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(sender);
    let mut registry_failure = None;
    while let Some(line) = receiver.recv().await {
        eprintln!("  | {line}");
        if is_registry_failure(&line) {
            registry_failure = Some(line);
        }
    }
    let status = child.wait().await.map_err(|source| BuildError::Io {
        what: format!("waiting for `{described}`"),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(match registry_failure {
        Some(line) => BuildError::RegistryUnreachable {
            command: described,
            status: status.to_string(),
            line,
        },
        None => BuildError::Failed {
            command: described,
            status: status.to_string(),
        },
    })
}

/// Whether a builder's output line reports that pulling from a registry
/// failed for want of a connection, TLS or credentials (buildah, podman
/// and docker phrase it so). A step of the build that fails to reach a
/// package index is the build's own failure, and does not match.
fn is_registry_failure(line: &str) -> bool {
    const PULLING: &[&str] = &[
        "pinging container registry",
        "initializing source docker://",
        "error pulling image",
        "pull access denied",
        "failed to resolve source metadata",
        "error response from daemon: get \"http",
    ];
    const WHY: &[&str] = &[
        "connection refused",
        "http response to https client",
        "no such host",
        "i/o timeout",
        "x509:",
        "tls:",
        "unauthorized",
        "authentication required",
        "denied",
        "toomanyrequests",
        "deadline exceeded",
        "network is unreachable",
    ];
    let line = line.to_ascii_lowercase();
    PULLING.iter().any(|p| line.contains(p)) && WHY.iter().any(|w| line.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_failures_are_told_from_build_step_failures() {
        for line in [
            "Error: creating build container: initializing source docker://127.0.0.1:5000/py:3: pinging container registry 127.0.0.1:5000: Get \"https://127.0.0.1:5000/v2/\": http: server gave HTTP response to HTTPS client",
            "Error: creating build container: initializing source docker://r.io/x:1: reading manifest 1 in r.io/x: unauthorized: authentication required",
            "ERROR: failed to solve: failed to resolve source metadata for docker.io/library/x:1: dial tcp: lookup registry-1.docker.io: no such host",
        ] {
            assert!(is_registry_failure(line), "{line}");
        }
        for line in [
            "ERROR: Could not install packages due to an OSError: HTTPSConnectionPool(host='pypi.org'): connection refused",
            "error: building at STEP \"RUN false\": exit status 1",
        ] {
            assert!(!is_registry_failure(line), "{line}");
        }
    }
}
