//! The `cache-server` binary: flags, logging, serving and `reindex`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cache_server::auth::{AuthMode, new_token, parse_duration_ms};
use cache_server::blob::upload::UploadSettings;
use cache_server::catalog::IndexTrust;
use cache_server::eviction::SharedEviction;
use cache_server::http::{AppState, app};
use cache_server::index::{Index, Scope, now_ms, token_hash};
use cache_server::leases::{LeaseBook, probe_guarantee};
use cache_server::reindex::reindex;
use cache_server::serve::{ServeSettings, load_tls};
use cache_server::shared::{EventLog, TokenStore};
use cache_server::storage::{Storage, StorageLocation, StorageOptions};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Content-addressed HTTP cache for CI: BLAKE3-verified blobs and an action
/// cache over a local folder or an S3-compatible bucket.
#[derive(Debug, Parser)]
#[command(name = "cache-server", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(
        long,
        env = "CACHE_SERVER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,

    /// Where blobs live: a folder path, file:///abs/path, or s3://bucket[/prefix]
    /// (with AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP from the environment).
    #[arg(
        long,
        env = "CACHE_SERVER_STORAGE",
        default_value = "./cache-data",
        global = true
    )]
    storage: String,

    /// SQLite index file [default: index.sqlite inside a local storage folder,
    /// else ./cache-index.sqlite].
    #[arg(long, env = "CACHE_SERVER_INDEX", global = true)]
    index: Option<PathBuf>,

    /// Largest accepted blob, uncompressed (e.g. 1073741824, 512MiB, 10GiB).
    #[arg(long, env = "CACHE_SERVER_MAX_BLOB_SIZE", default_value = "10GiB", value_parser = parse_size, global = true)]
    max_blob_size: u64,

    /// Upper bound of each storage call, in seconds; past it requests answer 503.
    #[arg(
        long,
        env = "CACHE_SERVER_STORAGE_TIMEOUT",
        default_value_t = 10,
        global = true
    )]
    storage_timeout: u64,

    /// zstd level of blobs stored compressed.
    #[arg(
        long,
        env = "CACHE_SERVER_ZSTD_LEVEL",
        default_value_t = 3,
        global = true
    )]
    zstd_level: i32,

    /// Keep the store under this many bytes (as stored) by evicting the
    /// least recently used objects, e.g. 50GiB [default: no quota].
    #[arg(long, env = "CACHE_SERVER_MAX_SIZE", value_parser = parse_size, global = true)]
    max_size: Option<u64>,

    /// How many deploy events (`POST /v1/events`) are kept; the oldest go first.
    #[arg(long, env = "CACHE_SERVER_EVENTS_RETENTION", default_value_t = cache_server::http::DEFAULT_EVENTS_RETENTION, global = true)]
    events_retention: u64,

    /// Who may do what: required (a token on every request), anonymous-read
    /// (writes need a token) or off [default: off on a loopback address,
    /// else required; another address without any token refuses to start
    /// unless --auth off is given].
    #[arg(long, env = "CACHE_SERVER_AUTH", value_enum, global = true)]
    auth: Option<AuthMode>,

    /// Memory all uploads together may buffer (e.g. 512MiB); more uploads
    /// at once wait for room instead of growing the process.
    #[arg(long, env = "CACHE_SERVER_UPLOAD_MEMORY", default_value = "512MiB", value_parser = parse_size, global = true)]
    upload_memory: u64,

    /// PEM certificate chain: serve HTTPS (rustls) instead of plain HTTP;
    /// needs --tls-key.
    #[arg(
        long,
        env = "CACHE_SERVER_TLS_CERT",
        requires = "tls_key",
        global = true
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "CACHE_SERVER_TLS_KEY",
        requires = "tls_cert",
        global = true
    )]
    tls_key: Option<PathBuf>,

    /// Seconds a client may take to send a request's headers.
    #[arg(
        long,
        env = "CACHE_SERVER_HEADER_TIMEOUT",
        default_value_t = 30,
        global = true
    )]
    header_timeout: u64,

    /// Seconds a connection may go with no byte moving in either direction
    /// (idle keep-alive, a stalled upload, a client that stopped reading).
    #[arg(
        long,
        env = "CACHE_SERVER_IDLE_TIMEOUT",
        default_value_t = 60,
        global = true
    )]
    idle_timeout: u64,

    /// With --storage s3://: this server is the bucket's only writer, so its
    /// index is trusted for negative answers (fastest, wrong with replicas).
    /// Without it, several replicas may share the bucket.
    #[arg(long, env = "CACHE_SERVER_INDEX_AUTHORITATIVE", global = true)]
    index_authoritative: bool,

    /// Replicas sharing a bucket: seconds an index row storage confirmed is
    /// trusted before storage is asked again (an object another replica
    /// deleted is seen gone at most this late).
    #[arg(
        long,
        env = "CACHE_SERVER_INDEX_FRESH_FOR",
        default_value_t = 5,
        global = true
    )]
    index_fresh_for: u64,

    /// This replica's name in shared leases and deploy events [default: a
    /// random one].
    #[arg(long, env = "CACHE_SERVER_REPLICA_ID", global = true)]
    replica_id: Option<String>,

    /// Replicas over a store that ignores conditional puts: milliseconds a
    /// lease write settles before it is read back (twice).
    #[arg(
        long,
        env = "CACHE_SERVER_LEASE_SETTLE_MS",
        default_value_t = 300,
        global = true
    )]
    lease_settle_ms: u64,

    /// Answer blob GETs larger than this (e.g. 8MiB) with a 307 to a
    /// presigned URL of the object, so the object store serves the bytes
    /// (S3 storage only; blobs stored compressed are still served here).
    #[arg(long, env = "CACHE_SERVER_REDIRECT_READS_OVER", value_parser = parse_size, global = true)]
    redirect_reads_over: Option<u64>,

    /// Seconds between eviction passes [default: 1, or 10 for replicas
    /// sharing a bucket, where a pass lists the bucket].
    #[arg(long, env = "CACHE_SERVER_EVICTION_INTERVAL", global = true)]
    eviction_interval: Option<u64>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Rebuild the index by listing storage, then exit.
    Reindex,
    /// Manage access tokens in the index.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it, once (only its hash is stored).
    Create {
        /// read, write (includes read) or admin (includes write, stats, tokens).
        #[arg(long)]
        scope: String,
        /// Who it is for, e.g. ci [default: its id].
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d, 12h [default: never expires].
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id or name.
    Revoke {
        /// Its id or name.
        id: String,
    },
}

/// Parses a byte count with an optional KiB/MiB/GiB/TiB (or KB/MB/GB/TB) suffix.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl Cli {
    fn location(&self) -> anyhow::Result<StorageLocation> {
        Ok(StorageLocation::parse(&self.storage)?)
    }

    fn index_path(&self, location: &StorageLocation) -> PathBuf {
        match (&self.index, location.local_folder()) {
            (Some(path), _) => path.clone(),
            (None, Some(folder)) => folder.join("index.sqlite"),
            (None, None) => PathBuf::from("cache-index.sqlite"),
        }
    }

    /// Whether replicas may share the store: S3 without --index-authoritative.
    fn shared(&self) -> anyhow::Result<bool> {
        Ok(matches!(self.location()?, StorageLocation::S3 { .. }) && !self.index_authoritative)
    }

    /// Opens storage and index; also returns a description for the log.
    fn open(&self) -> anyhow::Result<(Storage, Index, String)> {
        let location = self.location()?;
        let options = StorageOptions {
            timeout: Duration::from_secs(self.storage_timeout.max(1)),
            ..StorageOptions::default()
        };
        let storage = Storage::open(&location, options)?;
        let index_path = self.index_path(&location);
        let index = Index::open(&index_path)
            .with_context(|| format!("opening the index {}", index_path.display()))?;
        Ok((
            storage,
            index,
            format!("storage {location}, index {}", index_path.display()),
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Reindex) => {
            let (storage, index, described) = cli.open()?;
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
        Some(Command::Token { ref action }) => {
            let (storage, index, _) = cli.open()?;
            let tokens = if cli.shared()? {
                TokenStore::bucket(storage)
            } else {
                TokenStore::Index(index)
            };
            token_command(&tokens, action).await
        }
        Some(Command::Serve) | None => serve(&cli).await,
    }
}

async fn token_command(tokens: &TokenStore, action: &TokenCommand) -> anyhow::Result<()> {
    match action {
        TokenCommand::Create {
            scope,
            name,
            expires,
        } => {
            let scope = Scope::parse(scope)
                .with_context(|| format!("--scope {scope:?}: use read, write or admin"))?;
            let expires_ms = expires
                .as_deref()
                .map(parse_duration_ms)
                .transpose()
                .map_err(anyhow::Error::msg)
                .context("--expires")?
                .map(|ms| now_ms() + ms);
            let token = new_token().map_err(|e| anyhow::anyhow!("drawing a random token: {e}"))?;
            let name = name.clone().unwrap_or_else(|| token.id.clone());
            let record = tokens
                .create(token.id, token_hash(&token.secret), name, scope, expires_ms)
                .await?;
            eprintln!(
                "created token {} ({}, scope {}); it is shown once, store it now:",
                record.id,
                record.name,
                scope.as_str()
            );
            println!("{}", token.secret);
        }
        TokenCommand::List => {
            let now = now_ms();
            println!(
                "{:<12}  {:<20}  {:<5}  {:<8}  expires",
                "id", "name", "scope", "state"
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
                    "{:<12}  {:<20}  {:<5}  {:<8}  {expires}",
                    token.id,
                    token.name,
                    token.scope.as_str(),
                    state
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

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let (storage, index, described) = cli.open()?;
    if let Some(folder) = cli.location()?.local_folder().cloned() {
        let started = std::time::SystemTime::now();
        tokio::task::spawn_blocking(move || {
            match cache_server::storage::staging::sweep(&folder, started) {
                Ok((0, _)) => {}
                Ok((files, bytes)) => {
                    tracing::info!(
                        files,
                        bytes,
                        "removed writes left unpublished by an earlier crash"
                    );
                }
                Err(error) => tracing::warn!(%error, "could not sweep unpublished writes"),
            }
        });
    }
    let upload = UploadSettings {
        max_size: cli.max_blob_size,
        zstd_level: cli.zstd_level,
    };
    let shared = cli.shared()?;
    let replica = cli.replica_id.clone().unwrap_or_else(random_replica_id);
    let (tokens, events) = if shared {
        (
            TokenStore::bucket(storage.clone()),
            EventLog::bucket(storage.clone(), replica.clone()),
        )
    } else {
        (
            TokenStore::Index(index.clone()),
            EventLog::Index(index.clone()),
        )
    };
    let auth = cli.auth.unwrap_or(AuthMode::default_for(&cli.listen));
    if auth != AuthMode::Off && !cli.listen.ip().is_loopback() && !tokens.has_active().await? {
        anyhow::bail!(
            "refusing to listen on {} with auth {:?} and no active token: create one with \
             `cache-server token create --scope admin`, or pass --auth off explicitly",
            cli.listen,
            auth
        );
    }
    let mut state = AppState::new(storage.clone(), index.clone(), upload)
        .with_auth(auth)
        .with_shared_state(tokens, events);
    if shared {
        let settle = Duration::from_millis(cli.lease_settle_ms.max(1));
        let guarantee = probe_guarantee(&storage, settle).await;
        tracing::info!(
            "replica {replica}: the bucket may be shared; index rows trusted for {} s, \
             leases in the bucket by {guarantee}",
            cli.index_fresh_for
        );
        state = state
            .with_index_trust(IndexTrust::Cache {
                fresh_for: Duration::from_secs(cli.index_fresh_for),
            })
            .with_leases(LeaseBook::Bucket { storage, guarantee });
    }
    if let Some(quota) = cli.max_size {
        state = state.with_quota(quota);
        if shared && let Some(evictor) = state.evictor.clone() {
            let turn = SharedEviction {
                leases: state.leases.clone(),
                replica: replica.clone(),
            };
            state = state.with_evictor(evictor.shared(turn));
        }
    }
    if let Some(bytes) = cli.redirect_reads_over {
        if state.storage.can_presign() {
            state = state.with_redirect_reads_over(bytes);
        } else {
            tracing::warn!("--redirect-reads-over needs S3 storage; blobs are served directly");
        }
    }
    state = state
        .with_events_retention(cli.events_retention)
        .with_upload_memory(cli.upload_memory);
    let eviction_interval = Duration::from_secs(
        cli.eviction_interval
            .unwrap_or(if shared { 10 } else { 1 })
            .max(1),
    );
    let evicting = state
        .evictor
        .clone()
        .map(|evictor| tokio::spawn(evictor.run(eviction_interval)));
    let settings = ServeSettings {
        header_timeout: Duration::from_secs(cli.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(cli.idle_timeout.max(1)),
        tls: match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            _ => None,
        },
        ..ServeSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on {address}");
    if settings.tls.is_some() {
        tracing::info!("serving HTTPS (TLS by rustls)");
    }
    tracing::info!(
        "serving {described}, blobs up to {} bytes, quota {}, auth {auth:?}",
        cli.max_blob_size,
        cli.max_size
            .map_or_else(|| "none".to_owned(), |quota| format!("{quota} bytes"))
    );

    let flusher = tokio::spawn(flush_access_periodically(index.clone()));
    cache_server::serve::serve(listener, app(state), settings, shutdown_signal()).await;
    flusher.abort();
    if let Some(evicting) = evicting {
        evicting.abort();
    }
    index
        .flush_access()
        .await
        .context("writing access times at shutdown")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// A replica name for leases and events when none is given.
fn random_replica_id() -> String {
    format!("replica-{}", cache_server::auth::random_hex(4))
}

async fn flush_access_periodically(index: Index) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        if let Err(error) = index.flush_access().await {
            tracing::warn!(%error, "could not write access times to the index");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn index_defaults_to_the_local_storage_folder() {
        let cli = Cli::parse_from(["cache-server", "--storage", "/tmp/x"]);
        let location = cli.location().unwrap();
        assert_eq!(
            cli.index_path(&location),
            PathBuf::from("/tmp/x/index.sqlite")
        );
        let cli = Cli::parse_from(["cache-server", "--storage", "s3://b/p", "reindex"]);
        let location = cli.location().unwrap();
        assert_eq!(
            cli.index_path(&location),
            PathBuf::from("cache-index.sqlite")
        );
        assert!(matches!(cli.command, Some(Command::Reindex)));
    }
}
