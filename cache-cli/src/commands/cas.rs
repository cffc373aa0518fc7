//! `cachectl cas put FILE` and `cachectl cas get DIGEST`: a file into the
//! cache server's CAS under its BLAKE3 digest, and back, verified.

use std::io::Write;
use std::path::Path;

use cache_proto::Digest;

use super::context::records_for;
use crate::cli::config::ConfigFile;
use crate::cli::{CasCommand, Cli};
use crate::client::ClientError;
use crate::client::cas::Cas;
use crate::exit::Failure;

/// A cache failure: exit 3 (the server is needed for this command).
fn unreachable(error: ClientError) -> Failure {
    match error {
        ClientError::Local { .. } => Failure::failed(error),
        ClientError::Unreachable { .. } => Failure::unreachable(error),
    }
}

/// The BLAKE3 digest and size of the file at `path`.
async fn digest_of(path: &Path) -> Result<(Digest, u64), Failure> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<(Digest, u64)> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&owned)?)?;
        Ok((Digest::from(hasher.finalize()), hasher.count()))
    })
    .await
    .map_err(Failure::failed)?
    .map_err(|e| Failure::usage(anyhow::anyhow!("reading {}: {e}", path.display())))
}

/// Runs `cas put` or `cas get`.
pub async fn run(cli: &Cli, file: &ConfigFile, action: &CasCommand) -> Result<(), Failure> {
    let records = records_for(cli, file)?;
    let Some(cas) = Cas::of(&records) else {
        return Err(Failure::usage(anyhow::anyhow!(
            "cachectl cas needs a cache server: --cache URL or `cache` in cachectl.toml"
        )));
    };
    match action {
        CasCommand::Put { file } => {
            let (digest, size) = digest_of(file).await?;
            let missing = cas.missing(&[digest]).await.map_err(unreachable)?;
            let uploaded = if missing.is_empty() {
                0
            } else {
                cas.upload(&digest, size, file).await.map_err(unreachable)?
            };
            if cli.json {
                let report = serde_json::json!({
                    "digest": digest.to_string(),
                    "bytes": size,
                    "uploaded_bytes": uploaded,
                });
                println!("{report}");
            } else {
                println!("{digest}");
            }
            Ok(())
        }
        CasCommand::Get { digest, output } => {
            let digest = Digest::parse(digest).map_err(|e| {
                Failure::usage(anyhow::anyhow!("{digest:?} is not a BLAKE3 digest: {e}"))
            })?;
            let staging = tempfile::tempdir().map_err(Failure::failed)?;
            let target = match output {
                Some(path) => path.clone(),
                None => staging.path().join("blob"),
            };
            match cas.download_to(&digest, &target).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Failure::failed(anyhow::anyhow!(
                        "blob {digest} is not in the cache"
                    )));
                }
                Err(error) => return Err(unreachable(error)),
            }
            if output.is_none() {
                let mut content = std::fs::File::open(&target).map_err(Failure::failed)?;
                let mut stdout = std::io::stdout().lock();
                std::io::copy(&mut content, &mut stdout).map_err(Failure::failed)?;
                stdout.flush().map_err(Failure::failed)?;
            }
            Ok(())
        }
    }
}
