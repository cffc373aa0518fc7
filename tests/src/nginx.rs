//! nginx, the one way the suites and benchmarks start it: as the load
//! balancer in front of several cache-server replicas (round robin, a
//! request that fails to connect or gets a 502/503 retried on the next
//! replica, bodies streamed both ways), or serving a folder of files (the
//! reference of `http-bench`). Stopped on drop with SIGTERM to the master,
//! which takes its workers down: a SIGKILL would leave them running and
//! listening.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Service, free_port, wait_for_tcp};

/// A running nginx, stopped on drop.
pub struct Nginx {
    _root: TempDir,
    address: SocketAddr,
    service: Service,
}

impl Drop for Nginx {
    /// Asks nginx to stop: a SIGKILL of its master would leave the worker
    /// running on the port.
    fn drop(&mut self) {
        self.service.signal("TERM");
        for _ in 0..250 {
            if self.service.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Nginx {
    /// Balances across `upstreams`.
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        let servers: String = upstreams
            .iter()
            .map(|upstream| format!("        server {upstream} max_fails=1 fail_timeout=5s;\n"))
            .collect();
        Self::start_with(1, |prefix, address| {
            format!(
                r#"    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    client_max_body_size 0;
    upstream replicas {{
{servers}        keepalive 64;
    }}
    server {{
        listen {address};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
        }}
    }}
"#
            )
        })
    }

    /// Serves the files under `root` (sendfile, keep-alive), with
    /// `workers` worker processes.
    pub fn serve_files(root: &Path, workers: usize) -> Self {
        let root = root.display().to_string();
        Self::start_with(workers, |prefix, address| {
            format!(
                r#"    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    server {{ listen {address}; root {root}; }}
"#
            )
        })
    }

    /// Starts nginx with `workers` workers and the `http` block that `site`
    /// writes for a prefix folder and a listen address.
    fn start_with(workers: usize, site: impl Fn(&str, SocketAddr) -> String) -> Self {
        // A port picked free may be taken before nginx binds it: retry.
        let mut last_error = String::new();
        for _ in 0..4 {
            match Self::try_start(workers, &site) {
                Ok(nginx) => return nginx,
                Err(error) => last_error = error,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(
        workers: usize,
        site: &impl Fn(&str, SocketAddr) -> String,
    ) -> Result<Self, String> {
        let root = tempfile::tempdir().expect("temporary folder");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let prefix = root.path().display().to_string();
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let config = format!(
            "{user}worker_processes {workers};\npid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n    access_log off;\n{}}}\n",
            site(&prefix, address)
        );
        let path = root.path().join("nginx.conf");
        std::fs::write(&path, config).expect("writing nginx.conf");
        let mut command = Command::new("nginx");
        command
            .arg("-e")
            .arg(root.path().join("error.log"))
            .arg("-p")
            .arg(root.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]);
        let mut service = Service::spawn("nginx", command);
        let up = wait_for_tcp(address, Duration::from_secs(10)) && {
            std::thread::sleep(Duration::from_millis(100));
            !service.has_exited()
        };
        if !up {
            return Err(format!(
                "{}\n{}",
                service.output().text(),
                std::fs::read_to_string(root.path().join("error.log")).unwrap_or_default()
            ));
        }
        Ok(Self {
            _root: root,
            address,
            service,
        })
    }

    /// The base URL clients use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Process ids of the master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.service.pid();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok()),
            )
            .collect()
    }
}
