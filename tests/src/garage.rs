//! A real distributed S3 store: a three-node Garage cluster on loopback,
//! replication factor 3 (so writes and reads need 2 of 3 nodes), with one
//! bucket and one access key, stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::bins::service_binary;
use crate::process::{Service, free_port, wait_for_tcp};
use crate::s3::BUCKET;

const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Nodes in the cluster.
pub const NODES: usize = 3;

struct Node {
    config: PathBuf,
    meta: PathBuf,
    s3: SocketAddr,
    service: Option<Service>,
}

/// A running three-node Garage cluster.
pub struct GarageCluster {
    _root: TempDir,
    nodes: Vec<Node>,
}

fn garage() -> PathBuf {
    service_binary("garage", "garage")
}

fn write_config(folder: &Path, rpc: SocketAddr, s3: SocketAddr, rpc_secret: &str) -> PathBuf {
    let config = folder.join("garage.toml");
    let text = format!(
        r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "{rpc}"
rpc_public_addr = "{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "{s3}"
root_domain = ".s3.garage.localhost"
"#,
        meta = folder.join("meta").display(),
        data = folder.join("data").display(),
    );
    std::fs::write(&config, text).expect("writing a Garage config");
    config
}

impl GarageCluster {
    /// Starts three nodes, connects them, applies a layout and creates the
    /// bucket [`BUCKET`] with a read-write key.
    pub fn start() -> Self {
        // A port picked free may be taken by another test before the node
        // binds it: then start over on other ports.
        for _ in 0..4 {
            if let Some(cluster) = Self::try_start() {
                return cluster;
            }
        }
        panic!("the Garage cluster did not start on any of 4 sets of free ports");
    }

    fn try_start() -> Option<Self> {
        let root = tempfile::tempdir().expect("temporary folder");
        let rpc_secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        let mut nodes = Vec::new();
        for n in 0..NODES {
            let folder = root.path().join(format!("node{n}"));
            std::fs::create_dir_all(&folder).expect("node folder");
            let rpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let s3 = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = write_config(&folder, rpc, s3, &rpc_secret);
            nodes.push(Node {
                config,
                meta: folder.join("meta"),
                s3,
                service: None,
            });
        }
        let mut cluster = Self { _root: root, nodes };
        for n in 0..NODES {
            if !cluster.try_launch(n) {
                return None;
            }
        }
        let ids: Vec<String> = (0..NODES)
            .map(|n| cluster.cli(n, &["node", "id", "-q"]).trim().to_owned())
            .collect();
        for id in &ids[1..] {
            cluster.cli(0, &["node", "connect", id]);
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or(id);
            cluster.cli(0, &["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        cluster.cli(0, &["layout", "apply", "--version", "1"]);
        cluster.cli(0, &["bucket", "create", BUCKET]);
        cluster.cli(
            0,
            &["key", "import", "--yes", "-n", "cachectl", KEY_ID, SECRET],
        );
        cluster.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
            ],
        );
        Some(cluster)
    }

    /// Starts node `n`; whether it came up (it has its key and listens).
    fn try_launch(&mut self, n: usize) -> bool {
        let node = &mut self.nodes[n];
        let mut command = Command::new(garage());
        command
            .env("RUST_LOG", "warn")
            .arg("-c")
            .arg(&node.config)
            .arg("server");
        let mut service = Service::spawn(&format!("garage{n}"), command);
        let deadline = Instant::now() + Duration::from_secs(20);
        let up = loop {
            if service.has_exited() {
                break false;
            }
            if node.meta.join("node_key").exists()
                && wait_for_tcp(node.s3, Duration::from_millis(200))
            {
                // Still ours: a node that lost its port to another process exits.
                std::thread::sleep(Duration::from_millis(100));
                break !service.has_exited();
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        node.service = Some(service);
        up
    }

    fn launch(&mut self, n: usize) {
        assert!(self.try_launch(n), "garage node {n} did not start again");
    }

    /// Runs the `garage` CLI against node `n` until it succeeds (a node
    /// takes a moment to answer, the layout to reach every node); its stdout.
    fn cli(&self, n: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new(garage())
                .arg("-c")
                .arg(&self.nodes[n].config)
                .args(args)
                .output()
                .expect("garage CLI runs");
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?} kept failing: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The S3 API address of node `n`.
    pub fn s3_address(&self, n: usize) -> SocketAddr {
        self.nodes[n].s3
    }

    /// The `AWS_*` variables that point a client at node `n`.
    pub fn env(&self, n: usize) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://{}", self.nodes[n].s3)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "garage".into()),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.service.as_ref().map(Service::pid))
            .collect()
    }

    /// Kills node `n` with SIGKILL (its data stays).
    pub fn kill(&mut self, n: usize) {
        self.nodes[n].service = None;
    }

    /// Starts the killed node `n` again over its data and has another node
    /// connect to it, as an operator would (left alone, the peers retry the
    /// connection only after a back-off of tens of seconds); it rejoins the
    /// cluster.
    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.launch(n);
        let id = self.cli(n, &["node", "id", "-q"]).trim().to_owned();
        let peer = (n + 1) % NODES;
        self.cli(peer, &["node", "connect", &id]);
    }
}
