//! The server's configuration: every flag with its `CACHE_SERVER_*`
//! variable ([`Cli`], its subcommands), sizes, and what the flags imply
//! (where storage and the index are, whether replicas share the bucket).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cache_proto::{Invalid, Namespace, NamespacePattern};

use crate::auth::AuthMode;
use crate::index::Index;
use crate::namespaces::FallbackChains;
use crate::serve::CpuAffinity;
use crate::storage::{Storage, StorageLocation, StorageOptions};

/// Content-addressed HTTP cache for CI: BLAKE3-verified blobs and an action
/// cache over a local folder or an S3-compatible bucket.
#[derive(Debug, Parser)]
#[command(name = "cache-server", version)]
pub struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(
        long,
        env = "CACHE_SERVER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Also serve the Remote Execution API cache over gRPC on this address,
    /// e.g. 127.0.0.1:9092: plain h2c (Bazel: --remote_cache=grpc://HOST:PORT),
    /// or TLS with --tls-cert (grpcs://HOST:PORT).
    #[arg(long, env = "CACHE_SERVER_GRPC_LISTEN", global = true)]
    pub grpc_listen: Option<SocketAddr>,

    /// Where blobs live: a folder path, file:///abs/path, or s3://bucket[/prefix]
    /// (with AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP from the environment).
    #[arg(
        long,
        env = "CACHE_SERVER_STORAGE",
        default_value = "./cache-data",
        global = true
    )]
    pub storage: String,

    /// SQLite index file [default: index.sqlite inside a local storage folder,
    /// else ./cache-index.sqlite].
    #[arg(long, env = "CACHE_SERVER_INDEX", global = true)]
    pub index: Option<PathBuf>,

    /// Largest accepted blob, uncompressed (e.g. 1073741824, 512MiB, 10GiB).
    #[arg(long, env = "CACHE_SERVER_MAX_BLOB_SIZE", default_value = "10GiB", value_parser = parse_size, global = true)]
    pub max_blob_size: u64,

    /// Upper bound of each storage call, in seconds; past it requests answer 503.
    #[arg(
        long,
        env = "CACHE_SERVER_STORAGE_TIMEOUT",
        default_value_t = 10,
        global = true
    )]
    pub storage_timeout: u64,

    /// zstd level of what the server compresses itself; zstd uploads
    /// already in its 1 MiB frame layout are kept as sent.
    #[arg(
        long,
        env = "CACHE_SERVER_ZSTD_LEVEL",
        default_value_t = 3,
        global = true
    )]
    pub zstd_level: i32,

    /// Keep the store under this many bytes (as stored) by evicting the
    /// least recently used objects, e.g. 50GiB [default: no quota].
    #[arg(long, env = "CACHE_SERVER_MAX_SIZE", value_parser = parse_size, global = true)]
    pub max_size: Option<u64>,

    /// How many deploy events (`POST /v1/events`) are kept; the oldest go first.
    #[arg(long, env = "CACHE_SERVER_EVENTS_RETENTION", default_value_t = crate::state::DEFAULT_EVENTS_RETENTION, global = true)]
    pub events_retention: u64,

    /// Who may do what: required (a token on every request), anonymous-read
    /// (writes need a token) or off [default: off on a loopback address,
    /// else required; another address without any token refuses to start
    /// unless --auth off is given].
    #[arg(long, env = "CACHE_SERVER_AUTH", value_enum, global = true)]
    pub auth: Option<AuthMode>,

    /// Memory all uploads together may buffer (e.g. 512MiB); more uploads
    /// at once wait for room instead of growing the process.
    #[arg(long, env = "CACHE_SERVER_UPLOAD_MEMORY", default_value = "512MiB", value_parser = parse_size, global = true)]
    pub upload_memory: u64,

    /// PEM certificate chain: serve HTTPS (rustls) instead of plain HTTP;
    /// needs --tls-key.
    #[arg(
        long,
        env = "CACHE_SERVER_TLS_CERT",
        requires = "tls_key",
        global = true
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "CACHE_SERVER_TLS_KEY",
        requires = "tls_cert",
        global = true
    )]
    pub tls_key: Option<PathBuf>,

    /// Seconds a client may take to send a request's headers.
    #[arg(
        long,
        env = "CACHE_SERVER_HEADER_TIMEOUT",
        default_value_t = 30,
        global = true
    )]
    pub header_timeout: u64,

    /// Seconds a connection may go with no byte moving in either direction
    /// (idle keep-alive, a stalled upload, a client that stopped reading).
    #[arg(
        long,
        env = "CACHE_SERVER_IDLE_TIMEOUT",
        default_value_t = 60,
        global = true
    )]
    pub idle_timeout: u64,

    /// Threads serving HTTP connections, each with the connections it
    /// was handed (nginx's worker processes); default: one per CPU.
    #[arg(long, env = "CACHE_SERVER_HTTP_THREADS", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub http_threads: Option<u16>,

    /// Whether HTTP threads are bound to CPUs: `auto` binds one per CPU
    /// when there are as many threads as CPUs the server may use, and
    /// sends each connection to the thread on the CPU its packets arrive
    /// on; `off` lets the scheduler move them.
    #[arg(
        long,
        env = "CACHE_SERVER_HTTP_CPU_AFFINITY",
        value_enum,
        default_value_t = CpuAffinity::Auto,
        global = true
    )]
    pub http_cpu_affinity: CpuAffinity,

    /// With --storage s3://: this server is the bucket's only writer, so its
    /// index is trusted for negative answers (fastest, wrong with replicas).
    /// Without it, several replicas may share the bucket.
    #[arg(long, env = "CACHE_SERVER_INDEX_AUTHORITATIVE", global = true)]
    pub index_authoritative: bool,

    /// Replicas sharing a bucket: seconds an index row storage confirmed is
    /// trusted before storage is asked again (an object another replica
    /// deleted is seen gone at most this late).
    #[arg(
        long,
        env = "CACHE_SERVER_INDEX_FRESH_FOR",
        default_value_t = 5,
        global = true
    )]
    pub index_fresh_for: u64,

    /// This replica's name in shared leases and deploy events [default: a
    /// random one].
    #[arg(long, env = "CACHE_SERVER_REPLICA_ID", global = true)]
    pub replica_id: Option<String>,

    /// Replicas over a store that ignores conditional puts: milliseconds a
    /// lease write settles before it is read back (twice).
    #[arg(
        long,
        env = "CACHE_SERVER_LEASE_SETTLE_MS",
        default_value_t = 300,
        global = true
    )]
    pub lease_settle_ms: u64,

    /// Answer blob GETs larger than this (e.g. 8MiB) with a 307 to a
    /// presigned URL of the object, so the object store serves the bytes
    /// (S3 storage only; blobs stored compressed are still served here).
    #[arg(long, env = "CACHE_SERVER_REDIRECT_READS_OVER", value_parser = parse_size, global = true)]
    pub redirect_reads_over: Option<u64>,

    /// Seconds between eviction passes [default: 1, or 10 for replicas
    /// sharing a bucket, where a pass lists the bucket].
    #[arg(long, env = "CACHE_SERVER_EVICTION_INTERVAL", global = true)]
    pub eviction_interval: Option<u64>,

    /// Where reads of a namespace fall back, as PATTERN=NAMESPACE[,...]
    /// (repeatable; the first matching rule applies): with 'pr-*=main' a
    /// request in pr-42 reads pr-42, then main, and writes only pr-42.
    #[arg(
        long = "namespace-fallback",
        env = "CACHE_SERVER_NAMESPACE_FALLBACK",
        value_delimiter = ' ',
        value_parser = parse_fallback,
        global = true
    )]
    pub namespace_fallback: Vec<String>,

    /// A quota for each namespace a pattern matches, as PATTERN=SIZE
    /// (repeatable; the first matching rule applies): with 'pr-*=2GiB'
    /// each pull request's namespace holds at most 2 GiB and evicts only
    /// its own least-recently-used entries and the blobs it stored.
    #[arg(
        long = "namespace-quota",
        env = "CACHE_SERVER_NAMESPACE_QUOTA",
        value_delimiter = ' ',
        value_parser = parse_namespace_quota,
        global = true
    )]
    pub namespace_quota: Vec<(NamespacePattern, u64)>,

    /// A TOML file of trusted CI identity issuers (GitHub Actions, GitLab
    /// CI) and the rules mapping their ID tokens' claims to a scope and
    /// namespaces; such a token is then accepted as a bearer token.
    #[arg(long, env = "CACHE_SERVER_OIDC_CONFIG", global = true)]
    pub oidc_config: Option<PathBuf>,

    #[allow(missing_docs)] // clap would turn a doc comment into help text
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Checks one `--namespace-fallback` rule.
fn parse_fallback(text: &str) -> Result<String, Invalid> {
    FallbackChains::parse([text])
        .map(|_| text.to_owned())
        .map_err(|e| Invalid(e.to_string()))
}

/// Parses one `--namespace-quota` rule, `PATTERN=SIZE`.
fn parse_namespace_quota(text: &str) -> Result<(NamespacePattern, u64), Invalid> {
    let (pattern, size) = text.split_once('=').ok_or_else(|| {
        Invalid(format!(
            "a namespace quota is PATTERN=SIZE (e.g. 'pr-*=2GiB'), not {text:?}"
        ))
    })?;
    let pattern = NamespacePattern::parse(pattern.trim()).map_err(|e| Invalid(e.to_string()))?;
    if pattern.matches(&Namespace::default()) {
        return Err(Invalid::new(format!(
            "{text:?} matches the default namespace, whose objects are charged to no namespace: \
             bound it with --max-size, and give namespace quotas narrower patterns (e.g. 'pr-*')"
        )));
    }
    let size = parse_size(size)?;
    if size == 0 {
        return Err(Invalid(format!(
            "{text:?}: a quota of 0 bytes would refuse every write"
        )));
    }
    Ok((pattern, size))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Rebuild the index by listing storage, then exit.
    Reindex,
    /// Manage access tokens in the index.
    Token {
        /// create, list or revoke.
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of cache-server and its commands into a folder.
    Man {
        /// The folder, e.g. /usr/local/share/man/man1.
        dir: std::path::PathBuf,
    },
}

/// `cache-server token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
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
        /// Namespaces (patterns, e.g. pr-42 or team-*) it may write and
        /// read; repeatable [default: every namespace, unless --read is given].
        #[arg(long = "write-namespace", value_name = "PATTERN")]
        write_namespaces: Vec<NamespacePattern>,
        /// Namespaces (patterns) it may only read; repeatable.
        #[arg(long = "read-namespace", value_name = "PATTERN")]
        read_namespaces: Vec<NamespacePattern>,
        /// The namespace of its requests that name none [default: its
        /// first --write-namespace without '*', else its first
        /// --read-namespace without '*', else default].
        #[arg(long = "default-namespace", value_name = "NAMESPACE")]
        default_namespace: Option<Namespace>,
        /// Take the secret from this file (e.g. a mounted Kubernetes Secret;
        /// at least 32 characters, surrounding whitespace trimmed) instead of
        /// drawing one; then nothing is printed.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
        /// Create nothing when an active token of this --name exists: a
        /// bootstrap step that runs before every start.
        #[arg(long, requires = "name")]
        if_absent: bool,
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
pub fn parse_size(text: &str) -> Result<u64, Invalid> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| Invalid(format!("{text:?} is not a size in bytes")))?;
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
        other => return Err(Invalid(format!("unknown size unit {other:?}"))),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| Invalid(format!("{text:?} is too large")))
}

impl Cli {
    /// The `--namespace-fallback` rules.
    pub fn fallback_chains(&self) -> anyhow::Result<FallbackChains> {
        FallbackChains::parse(self.namespace_fallback.iter().map(String::as_str))
            .context("--namespace-fallback")
    }

    /// Where storage is.
    pub fn location(&self) -> anyhow::Result<StorageLocation> {
        Ok(StorageLocation::parse(&self.storage)?)
    }

    /// Where the index file is.
    pub fn index_path(&self, location: &StorageLocation) -> PathBuf {
        match (&self.index, location.local_folder()) {
            (Some(path), _) => path.clone(),
            (None, Some(folder)) => folder.join("index.sqlite"),
            (None, None) => PathBuf::from("cache-index.sqlite"),
        }
    }

    /// Whether replicas may share the store: S3 without --index-authoritative.
    pub fn shared(&self) -> anyhow::Result<bool> {
        Ok(matches!(self.location()?, StorageLocation::S3 { .. }) && !self.index_authoritative)
    }

    /// Opens storage and index, with a description for the log.
    pub fn open(&self) -> anyhow::Result<Opened> {
        let location = self.location()?;
        let options = StorageOptions {
            timeout: Duration::from_secs(self.storage_timeout.max(1)),
            ..StorageOptions::default()
        };
        let storage = Storage::open(&location, options)?;
        let index_path = self.index_path(&location);
        let index = Index::open(&index_path)
            .with_context(|| format!("opening the index {}", index_path.display()))?;
        Ok(Opened {
            storage,
            index,
            described: format!("storage {location}, index {}", index_path.display()),
        })
    }
}

/// The store and the index the flags name, opened.
pub struct Opened {
    /// The blob store.
    pub storage: Storage,
    /// The index.
    pub index: Index,
    /// Both, as the log names them (`storage DIR, index FILE`).
    pub described: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
    fn namespace_quotas_parse_and_never_cover_the_default_namespace() {
        let cli = Cli::parse_from([
            "cache-server",
            "--namespace-quota",
            "pr-*=2GiB",
            "--namespace-quota",
            "branch-*=100MiB",
        ]);
        let rules: Vec<(String, u64)> = cli
            .namespace_quota
            .iter()
            .map(|(pattern, size)| (pattern.as_str().to_owned(), *size))
            .collect();
        assert_eq!(
            rules,
            [
                ("pr-*".to_owned(), 2 << 30),
                ("branch-*".to_owned(), 100 << 20)
            ]
        );
        for bad in [
            "pr-*",
            "pr-*=",
            "pr-*=0",
            "a/b=1GiB",
            "*=1GiB",
            "def*=1GiB",
            "default=1GiB",
        ] {
            let parsed = Cli::try_parse_from(["cache-server", "--namespace-quota", bad]);
            assert!(parsed.is_err(), "{bad}");
        }
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
