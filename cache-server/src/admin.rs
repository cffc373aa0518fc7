//! The administrative subcommands: `reindex` (rebuild the index from
//! storage) and `token create|list|revoke`.

use std::time::Duration;

use anyhow::Context;

use crate::auth::{expiry, new_token};
use crate::config::{Cli, TokenCommand};
use crate::index::{Scope, TokenRecord, now_ms};
use crate::namespaces::NamespacePolicy;
use crate::reindex::reindex;
use crate::replicated::{TokenGrant, TokenStore};

/// What `token list` shows of a token's namespaces.
fn namespaces_of(token: &TokenRecord) -> String {
    token
        .namespaces
        .as_ref()
        .map_or_else(|| "all".to_owned(), NamespacePolicy::describe)
}

/// `cache-server reindex`: lists storage and rewrites the index from it.
pub async fn reindex_command(cli: &Cli) -> anyhow::Result<()> {
    let crate::config::Opened {
        storage,
        index,
        described,
    } = cli.open()?;
    tracing::info!("reindexing {described}");
    let report = reindex(&storage, &index).await.context("reindexing")?;
    tracing::info!(
        blobs = report.blobs,
        actions = report.actions,
        entries = report.entries,
        skipped = report.skipped,
        "index rebuilt from storage"
    );
    println!(
        "reindexed {} blobs, {} action-cache entries and {} protocol entries ({} objects skipped)",
        report.blobs, report.actions, report.entries, report.skipped
    );
    Ok(())
}

/// `cache-server token …`: in the bucket when replicas share it, else in
/// the index.
pub async fn token_command(cli: &Cli, action: &TokenCommand) -> anyhow::Result<()> {
    let crate::config::Opened { storage, index, .. } = cli.open()?;
    let tokens = if cli.shared()? {
        TokenStore::bucket(storage)
    } else {
        TokenStore::index(index)
    };
    apply(&tokens, action).await
}

async fn apply(tokens: &TokenStore, action: &TokenCommand) -> anyhow::Result<()> {
    match action {
        TokenCommand::Create {
            scope,
            name,
            expires,
            write_namespaces,
            read_namespaces,
            default_namespace,
            secret_file,
            if_absent,
        } => {
            let scope = Scope::parse(scope)
                .with_context(|| format!("--scope {scope:?}: use read, write or admin"))?;
            let expires_ms = expiry(expires.as_deref())
                .map_err(anyhow::Error::msg)
                .context("--expires")?;
            if *if_absent {
                let now = now_ms();
                let existing = tokens.list().await?.into_iter().find(|token| {
                    Some(&token.name) == name.as_ref()
                        && token.revoked_ms.is_none()
                        && token.active_at(now)
                });
                if let Some(token) = existing {
                    eprintln!(
                        "token {} ({}) exists and is active; nothing created",
                        token.id, token.name
                    );
                    return Ok(());
                }
            }
            let mut token =
                new_token().map_err(|e| anyhow::anyhow!("drawing a random token: {e}"))?;
            if let Some(path) = secret_file {
                token.secret = secret_from(path)?;
            }
            let namespaces = NamespacePolicy::from_lists(
                write_namespaces.clone(),
                read_namespaces.clone(),
                default_namespace.clone(),
            );
            let grant = TokenGrant {
                name: name.clone(),
                scope,
                expires_ms,
                namespaces,
            };
            let record = tokens.issue(&token, grant).await?;
            eprintln!(
                "created token {} ({}, scope {}, namespaces: {}){}",
                record.id,
                record.name,
                scope.as_str(),
                namespaces_of(&record),
                if secret_file.is_some() {
                    ", its secret the file's"
                } else {
                    "; it is shown once, store it now:"
                }
            );
            if secret_file.is_none() {
                println!("{}", token.secret);
            }
        }
        TokenCommand::List => {
            let now = now_ms();
            println!(
                "{:<12}  {:<20}  {:<5}  {:<8}  {:<20}  namespaces",
                "id", "name", "scope", "state", "expires"
            );
            for token in tokens.list().await? {
                let state = match (token.revoked_ms, token.active_at(now)) {
                    (Some(_), _) => "revoked",
                    (None, false) => "expired",
                    (None, true) => "active",
                };
                let expires = token
                    .expires_ms
                    .map(|ms| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
                        )
                        .to_string()
                    })
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<12}  {:<20}  {:<5}  {:<8}  {expires:<20}  {}",
                    token.id,
                    token.name,
                    token.scope.as_str(),
                    state,
                    namespaces_of(&token)
                );
            }
        }
        TokenCommand::Revoke { id } => match tokens.revoke(id.clone()).await? {
            0 => anyhow::bail!("no active token with id or name {id:?}"),
            count => println!("revoked {count} token(s)"),
        },
    }
    Ok(())
}

/// A token secret from `path`: trimmed, at least 32 characters, no
/// whitespace inside (it travels in an `Authorization` header).
fn secret_from(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--secret-file {}", path.display()))?;
    let secret = text.trim();
    if secret.chars().count() < 32 || secret.chars().any(char::is_whitespace) {
        anyhow::bail!(
            "--secret-file {}: a secret needs at least 32 characters and no whitespace \
             (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_must_hold_a_long_secret_without_spaces() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("token");
        std::fs::write(&path, "  0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            secret_from(&path).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        for bad in ["short\n", "0123456789abcdef 0123456789abcdef0\n", ""] {
            std::fs::write(&path, bad).unwrap();
            let error = secret_from(&path).unwrap_err().to_string();
            assert!(error.contains("at least 32 characters"), "{error}");
        }
        assert!(secret_from(&folder.path().join("missing")).is_err());
    }
}
