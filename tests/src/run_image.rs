//! Running an image we built, as a container runtime would as far as this
//! sandbox allows (podman and crun cannot start containers here): the
//! image is unpacked with `skopeo` and `umoci`, and its entrypoint and
//! command started with `chroot --userspec` as the image's user, with the
//! image's environment and the host's network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::registry::{skopeo_inspect, unpack};

/// A running image; killed on drop.
pub struct RunningImage {
    child: Child,
    port: u16,
    /// The unpacked image (`bundle/rootfs`).
    pub folder: TempDir,
    /// The image's config (`skopeo inspect --config`).
    pub config: serde_json::Value,
}

impl RunningImage {
    /// Starts `image` (`docker://…` or `oci:…`) with `env` over the image's
    /// own; `port` is where the program is expected to listen (it is
    /// waited for, up to 20 s).
    pub fn start(image: &str, env: &[(&str, &str)], port: u16) -> Self {
        let folder = tempfile::tempdir().expect("temporary folder");
        let bundle = unpack(image, folder.path());
        let config = skopeo_inspect(image, true)["config"].clone();
        let mut argv: Vec<String> = Vec::new();
        for part in ["Entrypoint", "Cmd"] {
            for word in config[part].as_array().into_iter().flatten() {
                argv.push(word.as_str().expect("a string").to_owned());
            }
        }
        assert!(!argv.is_empty(), "the image has no command: {config}");
        // Found on the runner's PATH: the environment is the image's.
        let chroot = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("chroot"))
                    .find(|candidate| candidate.is_file())
            })
            .expect("chroot on PATH");
        let mut command = Command::new(chroot);
        if let Some(user) = config["User"].as_str().filter(|u| !u.is_empty()) {
            command.arg(format!("--userspec={user}"));
        }
        command
            .arg(bundle.join("rootfs"))
            .args(&argv)
            .env_clear()
            .stdin(Stdio::null());
        for pair in config["Env"].as_array().into_iter().flatten() {
            if let Some((name, value)) = pair.as_str().and_then(|p| p.split_once('=')) {
                command.env(name, value);
            }
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("chroot runs");
        let mut running = Self {
            child,
            port,
            folder,
            config,
        };
        running.wait_until_listening();
        running
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the image's program exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the image's program did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` from the program: the status line and the body.
    pub fn get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )
        .expect("sends");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }

    /// The process id of the image's program (`chroot` runs it in its
    /// own place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The unpacked root file system.
    pub fn rootfs(&self) -> std::path::PathBuf {
        self.folder.path().join("bundle/rootfs")
    }
}

impl Drop for RunningImage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
