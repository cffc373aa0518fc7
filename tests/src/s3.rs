//! A real S3-compatible server: `s3s-fs` over a temporary folder, checking
//! SigV4 signatures with its own access key.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::bins::service_binary;
use crate::process::{Service, free_port, wait_for_tcp};

/// The bucket every test server has.
pub const BUCKET: &str = "cache";
const ACCESS_KEY: &str = "cachectl-test";
const SECRET_KEY: &str = "cachectl-test-secret-key";

/// A running (or stopped, restartable) `s3s-fs`.
pub struct S3Server {
    root: TempDir,
    address: SocketAddr,
    service: Option<Service>,
}

impl S3Server {
    /// Starts a server with one empty bucket, [`BUCKET`].
    pub fn start() -> Self {
        let mut root = tempfile::tempdir().expect("temporary folder");
        std::fs::create_dir(root.path().join(BUCKET)).expect("creating the bucket folder");
        for _ in 0..5 {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut server = Self {
                root,
                address,
                service: None,
            };
            if server.try_start() {
                return server;
            }
            root = server.into_root();
        }
        panic!("s3s-fs did not start on any of 5 free ports");
    }

    fn into_root(mut self) -> TempDir {
        self.service = None;
        let placeholder = tempfile::tempdir().expect("temporary folder");
        std::mem::replace(&mut self.root, placeholder)
    }

    fn try_start(&mut self) -> bool {
        let mut command = Command::new(service_binary("s3s-fs", "s3s-fs"));
        command
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.address.port().to_string())
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path());
        let mut service = Service::spawn("s3s-fs", command);
        let up = wait_for_tcp(self.address, Duration::from_secs(10)) && !service.has_exited();
        self.service = Some(service);
        up
    }

    /// Stops the server with SIGKILL (the data stays).
    pub fn stop(&mut self) {
        self.service = None;
    }

    /// Starts the stopped server again on the same port over the same data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start(),
            "s3s-fs did not come back on {}",
            self.address
        );
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The folder holding the buckets.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// The `AWS_*` variables that point a client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://{}", self.address)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
