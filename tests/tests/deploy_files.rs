//! The deployment files in `deploy/` are what they claim: the systemd unit
//! passes `systemd-analyze verify` without a word, every setting its
//! environment file names is one `cache-server` reads, and those settings,
//! with the token made the way the unit's comment says, start a server that
//! requires tokens and serves with one. The Kubernetes manifests name only
//! flags and variables the server has, probe paths it answers, the port it
//! listens on and the user and folders of the image; their init container
//! and container, run as written, serve with the Secret's token. The image
//! `cachectl build` makes from this repository runs the server as non-root.

use std::path::{Path, PathBuf};
use std::process::Command;

use cachectl_e2e::bins::workspace_binary;
use cachectl_e2e::process::free_port;
use cachectl_e2e::python::push_node_image;
use cachectl_e2e::registry::RegistryServer;
use cachectl_e2e::run_image::RunningImage;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(relative)
}

/// The `NAME=value` lines of an environment file, commented-out examples
/// included when `with_examples`.
fn settings(text: &str, with_examples: bool) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| match line.strip_prefix("# ") {
            Some(example) if with_examples => Some(example),
            Some(_) => None,
            None if line.starts_with('#') => None,
            None => Some(line),
        })
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| {
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
        })
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_settings_start_a_server_that_requires_tokens() {
    let server = workspace_binary("cache-server");
    let unit = std::fs::read_to_string(deploy("systemd/cache-server.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/cache-server\n"),
        "{unit}"
    );
    // verify needs the program to exist: point it at the one just built.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("cache-server.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/cache-server", &server.display().to_string()),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    // Every CACHE_SERVER_* name the file sets or suggests is a real one.
    let help = Command::new(&server).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let env_text = std::fs::read_to_string(deploy("systemd/cache-server.env")).unwrap();
    for (name, _) in settings(&env_text, true) {
        if name.starts_with("CACHE_SERVER_") {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "cache-server reads no {name}"
            );
        }
    }

    // The file's settings, on a loopback port and in a temporary folder.
    let state = scratch.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = settings(&env_text, false)
        .into_iter()
        .map(|(name, value)| {
            let value = match name.as_str() {
                "CACHE_SERVER_LISTEN" => format!("127.0.0.1:{port}"),
                _ => value.replace("/var/lib/cache-server", &state.display().to_string()),
            };
            (name, value)
        })
        .collect();
    assert!(
        env.iter()
            .any(|(n, v)| n == "CACHE_SERVER_AUTH" && v == "required")
    );
    let token = Command::new(&server)
        .args(["token", "create", "--name", "ci", "--scope", "write"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let child = Command::new(&server)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_requires_and_serves_with(child, port, &token);
    assert!(state.join("blobs").is_dir() && state.join("index.sqlite").is_file());
}

/// The HTTP status of a `curl` with `args`.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits for the server `child` on `port` to be ready, then asks
/// `/readyz`, `/healthz`, a PUT without a token, the PUT with `token` and
/// the GET with it; stops the server and checks the answers.
fn assert_requires_and_serves_with(mut child: std::process::Child, port: u16, token: &str) {
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = String::new();
    for _ in 0..100 {
        ready = curl(&[&format!("{base}/readyz")]);
        if ready == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let digest = blake3::hash(b"deployed").to_hex().to_string();
    let blob = format!("{base}/v1/cas/{digest}");
    let anonymous = curl(&["-X", "PUT", "--data-binary", "deployed", &blob]);
    let bearer = format!("Authorization: Bearer {token}");
    let stored = curl(&[
        "-X",
        "PUT",
        "-H",
        &bearer,
        "--data-binary",
        "deployed",
        &blob,
    ]);
    let read = curl(&["-H", &bearer, &blob]);
    let health = curl(&[&format!("{base}/healthz")]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        [ready, health, anonymous, stored, read],
        ["200", "200", "401", "201", "200"],
        "readyz, healthz, no token, PUT, GET"
    );
}

/// The documents of a (multi-document) YAML file of `deploy/`.
fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(relative)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .collect()
}

/// The document of `kind` (the first).
fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The `[app]` settings of the repository's own `cachectl.toml` (the
/// cache-server image).
fn image_settings() -> toml::Table {
    let text = std::fs::read_to_string(deploy("../cachectl.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    file["app"].as_table().unwrap().clone()
}

/// `name=value` of a container's `env` (values given literally).
fn container_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            Some((
                pair["name"].as_str()?.to_owned(),
                pair["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn the_kubernetes_manifests_agree_with_the_server_and_the_image_and_serve_as_written() {
    let server = workspace_binary("cache-server");
    let help = |args: &[&str]| -> String {
        let output = Command::new(&server)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let serve_help = help(&[]);
    let token_help = help(&["token", "create"]);
    let image = image_settings();
    let image_env = image["env"].as_table().unwrap();
    let image_port: u16 = image_env["CACHE_SERVER_LISTEN"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let image_user = image["user"].as_str().unwrap();

    for file in [
        "kubernetes/cache-server.yaml",
        "kubernetes/cache-server-replicas.yaml",
    ] {
        let documents = documents(file);
        let deployment = of_kind(&documents, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        // The user of the image, never root.
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{file}");
        assert_eq!(
            format!(
                "{}:{}",
                security["runAsUser"].as_u64().unwrap(),
                security["runAsGroup"].as_u64().unwrap()
            ),
            image_user,
            "{file}"
        );
        let containers = pod["containers"].as_sequence().unwrap();
        let inits = pod["initContainers"].as_sequence().unwrap();
        for container in containers.iter().chain(inits) {
            for (name, _) in container_env(container) {
                if name.starts_with("CACHE_SERVER_") {
                    assert!(
                        serve_help.contains(&format!("[env: {name}=")),
                        "{file}: no {name}"
                    );
                }
            }
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        }
        // The init container's flags are `token create`'s.
        let init_args: Vec<&str> = inits[0]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&init_args[..2], ["token", "create"]);
        for flag in init_args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                token_help.contains(&format!("{flag} "))
                    || token_help.contains(&format!("{flag}\n")),
                "{file}: token create has no {flag}"
            );
        }
        let container = &containers[0];
        let env = container_env(container);
        let listen = env
            .iter()
            .find(|(n, _)| n == "CACHE_SERVER_LISTEN")
            .map(|(_, v)| v.clone());
        let port: u16 = listen.unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
        assert_eq!(port, image_port, "{file}");
        let ports = container["ports"].as_sequence().unwrap();
        assert_eq!(ports[0]["containerPort"].as_u64(), Some(u64::from(port)));
        let port_name = ports[0]["name"].as_str().unwrap();
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["port"].as_str(),
                Some(port_name)
            );
        }
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        // The Service (and the Ingress) reach that port by its name.
        let service = of_kind(&documents, "Service");
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_str(),
            Some(port_name)
        );
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["template"]["metadata"]["labels"]
        );
        if let Some(ingress) = documents.iter().find(|d| d["kind"] == "Ingress") {
            let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
            assert_eq!(backend["name"], service["metadata"]["name"]);
            assert_eq!(backend["port"]["name"], service["spec"]["ports"][0]["name"]);
        }
        // Every folder the server writes is a mounted volume (the root
        // file system is read-only).
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        for (name, value) in &env {
            if (name == "CACHE_SERVER_STORAGE" || name == "CACHE_SERVER_INDEX")
                && value.starts_with('/')
            {
                assert!(
                    mounts.iter().any(|m| value.starts_with(m)),
                    "{file}: {value} is not on a volume"
                );
            }
        }
    }

    // The single-replica manifest, run as written: the init container
    // registers the Secret's token, the server requires it and serves with it.
    let documents = documents("kubernetes/cache-server.yaml");
    let pod = &of_kind(&documents, "Deployment")["spec"]["template"]["spec"];
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let secrets = scratch.path().join("secrets");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(secrets.join("token"), format!("{secret}\n")).unwrap();
    let port = free_port();
    let local = |value: &str| {
        value
            .replace("/var/lib/cache-server", &data.display().to_string())
            .replace("/run/secrets/cache-server", &secrets.display().to_string())
            .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
    };
    let run_init = || {
        let init = &pod["initContainers"][0];
        let args: Vec<String> = init["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| local(a.as_str().unwrap()))
            .collect();
        let output = Command::new(&server)
            .args(&args)
            .envs(container_env(init).into_iter().map(|(n, v)| (n, local(&v))))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(
            output.stdout.is_empty(),
            "a secret from a file is not printed"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run_init().contains("created token"));
    // Every start runs it again: nothing more is created.
    assert!(run_init().contains("exists and is active; nothing created"));
    let container = &pod["containers"][0];
    let child = Command::new(&server)
        .envs(
            container_env(container)
                .into_iter()
                .map(|(n, v)| (n, local(&v))),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_requires_and_serves_with(child, port, secret);
}

#[test]
fn the_server_image_cachectl_builds_from_this_repository_runs_as_non_root_and_serves() {
    let registry = RegistryServer::start();
    let from = push_node_image(&registry);
    let repository = deploy("..");
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    // The binary for the image, as the image's README says (the debug
    // build the tests already have, stripped).
    let built = Command::new(repository.join("deploy/image/build.sh"))
        .arg(&dist)
        .env("CACHECTL_PROFILE", "debug")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let base = format!("{}/acme/cache-server-base", registry.host());
    let app = format!("{}/acme/cache-server:test", registry.host());
    let output = Command::new(workspace_binary("cachectl"))
        .args([
            "build",
            "--json",
            "--image",
            &base,
            "--app-image",
            &app,
            "--from",
            &from,
            "--context",
        ])
        .arg(&dist)
        .current_dir(&repository)
        .env("CACHECTL_CACHE_DIR", work.path().join("records"))
        .env_remove("CACHECTL_CACHE")
        .env_remove("CACHECTL_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reference = report["app"]["reference"].as_str().unwrap();

    let port = free_port();
    let running = RunningImage::start(
        &format!("docker://{reference}"),
        // On a non-loopback address the server wants a token first (the
        // manifests' init container); here it is the probe that matters.
        &[
            ("CACHE_SERVER_LISTEN", &format!("0.0.0.0:{port}")),
            ("CACHE_SERVER_AUTH", "off"),
        ],
        port,
    );
    let (status, body) = running.get("/healthz");
    assert!(status.contains("200"), "{status} {body}");
    let (status, _) = running.get("/readyz");
    assert!(status.contains("200"), "{status}");
    // It runs as the image's user, not root, and writes where the image
    // says its data lives.
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid())).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        uid.split_whitespace().skip(1).all(|id| id == "10001"),
        "{uid}"
    );
    assert_eq!(running.config["User"], "10001:10001");
    assert!(
        running
            .rootfs()
            .join("var/lib/cache-server/index.sqlite")
            .is_file()
    );
    assert!(
        running
            .rootfs()
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );
    // The layer of the app is the binary alone.
    assert!(
        running
            .rootfs()
            .join("usr/local/bin/cache-server")
            .is_file()
    );
}
