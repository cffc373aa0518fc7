//! Builders of the base image.

pub mod external;
pub mod native;

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::image::registry::RegistryError;

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
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "native" => Ok(Self::Native),
            "docker" => Ok(Self::Docker),
            "buildah" => Ok(Self::Buildah),
            "podman" => Ok(Self::Podman),
            other => Err(format!(
                "unknown builder {other:?} (use native, docker, buildah or podman)"
            )),
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
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    while let Some(line) = receiver.recv().await {
        eprintln!("  | {line}");
    }
    let status = child.wait().await.map_err(|source| BuildError::Io {
        what: format!("waiting for `{described}`"),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::Failed {
        command: described,
        status: status.to_string(),
    })
}
