//! The `cache-server` under test, as a real process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::bins::workspace_binary;
use crate::process::Service;
use crate::s3::{BUCKET, S3Server};

/// Where the server under test keeps its blobs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local folder (the embedded default).
    Local,
    /// The given S3 server's bucket under a key prefix.
    S3 {
        /// `AWS_*` variables of the S3 server.
        env: Vec<(String, String)>,
        /// Key prefix inside the bucket.
        prefix: String,
        /// Where `s3s-fs` keeps the objects of that prefix on disk.
        objects_root: PathBuf,
    },
}

impl Backend {
    /// The S3 backend over `server`, under `prefix`.
    pub fn s3(server: &S3Server, prefix: &str) -> Self {
        Self::S3 {
            env: server.env(),
            prefix: prefix.to_owned(),
            objects_root: server.root().join(BUCKET).join(prefix),
        }
    }

    /// The bucket of a Garage cluster under `prefix`, reached through node `node`.
    pub fn garage(cluster: &crate::garage::GarageCluster, node: usize, prefix: &str) -> Self {
        Self::S3 {
            env: cluster.env(node),
            prefix: prefix.to_owned(),
            // Garage keeps objects in its own block format, not as files.
            objects_root: PathBuf::new(),
        }
    }

    /// The S3 backend over `server`, under `prefix`, reached through
    /// `endpoint` (e.g. a [`crate::fault_proxy::FaultProxy`]) instead of
    /// the server's own address.
    pub fn s3_via(server: &S3Server, prefix: &str, endpoint: SocketAddr) -> Self {
        let mut backend = Self::s3(server, prefix);
        if let Self::S3 { env, .. } = &mut backend {
            for (name, value) in env.iter_mut() {
                if name == "AWS_ENDPOINT" {
                    *value = format!("http://{endpoint}");
                }
            }
        }
        backend
    }
}

/// Extra settings of a server under test.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra command-line arguments, e.g. `--max-blob-size 1MiB`.
    pub args: Vec<String>,
    /// The local storage folder, instead of one in the server's temporary
    /// folder (e.g. on a small tmpfs).
    pub local_folder: Option<PathBuf>,
    /// `RUST_LOG` of the server (default `info`).
    pub log: Option<String>,
    /// Another `cache-server` binary than the workspace's (a benchmark's
    /// baseline built from an earlier commit).
    pub binary: Option<PathBuf>,
    /// Extra environment variables, e.g. `CACHE_SERVER_HTTP_THREADS`.
    pub env: Vec<(String, String)>,
}

impl ServerOptions {
    /// Options with these extra arguments.
    pub fn args(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The same options with the local storage in `folder`.
    pub fn in_folder(mut self, folder: &Path) -> Self {
        self.local_folder = Some(folder.to_owned());
        self
    }
}

/// A running `cache-server` with its own storage folder and index, killed on drop.
pub struct CacheServer {
    data: TempDir,
    backend: Backend,
    options: ServerOptions,
    service: Option<Service>,
    address: SocketAddr,
    /// An HTTP client for talking to it.
    pub client: reqwest::Client,
}

impl CacheServer {
    /// Starts a server over `backend`.
    pub fn start(backend: Backend, options: ServerOptions) -> Self {
        let mut server = Self {
            data: tempfile::tempdir().expect("temporary folder"),
            backend,
            options,
            service: None,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        };
        server.launch();
        server
    }

    /// Starts a server over a local folder with default settings.
    pub fn local() -> Self {
        Self::start(Backend::Local, ServerOptions::default())
    }

    /// The local storage folder (meaningful for [`Backend::Local`]).
    pub fn storage_dir(&self) -> PathBuf {
        self.options
            .local_folder
            .clone()
            .unwrap_or_else(|| self.data.path().join("storage"))
    }

    /// Where the stored objects are on disk, for either backend (the S3
    /// server used in tests keeps each object as a file under its key).
    pub fn objects_root(&self) -> PathBuf {
        match &self.backend {
            Backend::Local => self.storage_dir(),
            Backend::S3 { objects_root, .. } => objects_root.clone(),
        }
    }

    /// The file that holds blob `digest` in storage, whether or not it exists.
    pub fn stored_blob_file(&self, digest: &cache_proto::Digest) -> PathBuf {
        let hex = digest.to_string();
        self.objects_root().join("cas").join(&hex[..2]).join(hex)
    }

    /// The SQLite index file.
    pub fn index_path(&self) -> PathBuf {
        self.data.path().join("index.sqlite")
    }

    fn command(&self) -> Command {
        let binary = match &self.options.binary {
            Some(binary) => binary.clone(),
            None => workspace_binary("cache-server"),
        };
        let mut command = Command::new(binary);
        let storage = match &self.backend {
            Backend::Local => self.storage_dir().display().to_string(),
            Backend::S3 { env, prefix, .. } => {
                command.envs(env.iter().map(|(k, v)| (k, v)));
                format!("s3://{BUCKET}/{prefix}")
            }
        };
        command
            .env("RUST_LOG", self.options.log.as_deref().unwrap_or("info"))
            .arg("--storage")
            .arg(storage)
            .arg("--index")
            .arg(self.index_path())
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn launch(&mut self) {
        let mut command = self.command();
        command.args(["--listen", "127.0.0.1:0"]);
        let service = Service::spawn("cache-server", command);
        let address = service
            .output()
            .wait_for(Duration::from_secs(60), |line| {
                let (_, rest) = line.split_once("listening on ")?;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "cache-server did not report its address:\n{}",
                    service.output().text()
                )
            });
        self.address = address;
        self.service = Some(service);
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `GET path` as JSON, with a bearer `token` if given.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("a JSON body")
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.service
            .as_ref()
            .map(|service| service.output().text())
            .unwrap_or_default()
    }

    /// The server's log once `done` holds for it (it is read from the
    /// server's output as it comes), or after five seconds.
    pub async fn logs_once(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if done(&logs) || std::time::Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with SIGTERM and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        match self.service.as_mut() {
            Some(service) => service.signal_and_wait("TERM", Duration::from_secs(30)),
            None => true,
        }
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and waits
    /// for it to be gone; [`CacheServer::start_again`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.signal("KILL");
            service.wait_exit(Duration::from_secs(10));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.service.as_ref().map(Service::pid)
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The server process, while it runs.
    pub fn service(&mut self) -> Option<&mut Service> {
        self.service.as_mut()
    }

    /// Stops the server gracefully and starts it again over the same storage
    /// and index (on a new port).
    pub fn restart(&mut self) {
        assert!(
            self.stop(),
            "cache-server did not shut down cleanly:\n{}",
            self.logs()
        );
        self.start_again();
    }

    /// Starts the server again after [`CacheServer::stop`], over the same
    /// storage and index (on a new port).
    pub fn start_again(&mut self) {
        self.service = None;
        self.launch();
    }

    /// Runs a one-shot subcommand (e.g. `reindex`) over the same storage and
    /// index; returns its exit success and output.
    pub fn run_subcommand(&self, subcommand: &str) -> (bool, String) {
        let output = self.run_args(&[subcommand]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// Runs `cache-server ARGS...` over the same storage and index.
    pub fn run_args(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.command();
        command.args(args);
        command.output().expect("cache-server runs")
    }

    /// Creates a token with `scope` (and `extra` flags such as
    /// `--expires 1s`) through the CLI; returns its secret.
    pub fn create_token(&self, scope: &str, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--scope", scope, "--name", name];
        args.extend_from_slice(extra);
        let output = self.run_args(&args);
        assert!(
            output.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Path of the server's data folder.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}
