//! Cache poisoning, secrets and TLS.
//!
//! - An action-cache record that names another image (stale, or planted by
//!   someone with a write token) is checked against the registry's tag and
//!   never printed or used.
//! - Registry passwords and cache tokens never reach logs, error messages,
//!   `--json` output, `$GITHUB_OUTPUT` or the deploy events, even at debug
//!   level and when they are refused.
//! - `cache-server --tls-cert/--tls-key` serves HTTPS with a self-signed
//!   certificate that `cachectl --cacert` trusts.
//!
//! (A read-only token writing through any route, native or compatible, is
//! refused by `team_auth::every_route_checks_its_scope`; a wrong body under
//! a right digest by `cas_api` and `hostile_input`.)

use std::path::Path;

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::{RegistryServer, push_busybox};
use cachectl_e2e::{Backend, CacheServer, ServerOptions};

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_action_cache_record_is_never_used() {
    let server = CacheServer::local();
    let registry = RegistryServer::start();
    let image = format!("{}/acme/web-base", registry.host());
    let project = Project::native_with_cache(&image, &server.base_url(), 0);
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    let key = built["key"].as_str().unwrap().to_owned();
    let genuine = built["digest"].as_str().unwrap().to_owned();

    // Another image in the same repository, and a record pointing at it
    // with a reference on another registry altogether.
    push_busybox(&registry, "acme/web-base", "evil");
    let evil_digest = resolve(&registry, "acme/web-base", "evil").await;
    let record_url = server.url(&format!("/v1/ac/{key}"));
    let mut record: serde_json::Value = server
        .client
        .get(&record_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(evil_digest, genuine);
    record["digest"] = evil_digest.clone().into();
    record["reference"] = format!("evil.example.com/acme/web-base@{evil_digest}").into();
    let put = server
        .client
        .put(&record_url)
        .json(&record)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let run = project.cachectl(&["ensure-base", "--json"], &[]).success();
    let report = run.json();
    assert_eq!(report["digest"], genuine.as_str(), "{report}");
    assert_ne!(report["reference"].as_str(), record["reference"].as_str());
    assert!(
        !run.stdout.contains("evil.example.com"),
        "the planted reference reached the output: {}",
        run.stdout
    );
    assert_eq!(project.builds(), 1, "nothing needed rebuilding");
    assert!(
        report["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("registry"))),
        "no warning about the mismatch: {report}"
    );
    // The record is repaired: the next run is a plain cache hit.
    let again = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(again["source"], "cache");
    assert_eq!(again["digest"], genuine.as_str());
}

async fn resolve(registry: &RegistryServer, repository: &str, tag: &str) -> String {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .head(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.host()
        ))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Every byte of every file below `folder`, lossily as text.
fn all_text_under(folder: &Path) -> String {
    cachectl_e2e::data::files_under(folder)
        .into_iter()
        .filter_map(|path| std::fs::read(path).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_passwords_and_cache_tokens_never_leak() {
    const PASSWORD: &str = "Reg-Pa55-9f8e7d6c5b4a";
    const WRONG_PASSWORD: &str = "Wrong-Pa55-0a1b2c3d4e";
    let mut options = ServerOptions::args(&["--auth", "required"]);
    options.log = Some("debug".into());
    let mut server = CacheServer::start(Backend::Local, options);
    let token = server.create_token("write", "ci", &[]);
    let admin = server.create_token("admin", "ops", &[]);
    let wrong_token = format!("cct_{}", "f".repeat(64));
    let registry = RegistryServer::start_with_htpasswd("ci", PASSWORD);
    let image = format!("{}/acme/secret-base", registry.host());
    let project = Project::native_with_cache(&image, &server.base_url(), 0);
    let outputs = project.path().join("github-output");
    let debug = [
        ("RUST_LOG", "debug"),
        ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
    ];
    let mut captured = String::new();
    let with =
        |command: &'static str, extra: &[&'static str], password: &'static str, token: &str| {
            let mut args: Vec<String> = [command, "--json"]
                .iter()
                .chain(extra)
                .map(|a| (*a).to_owned())
                .collect();
            args.extend(
                [
                    "--registry-user",
                    "ci",
                    "--registry-password",
                    password,
                    "--cache-token",
                    token,
                ]
                .map(str::to_owned),
            );
            args
        };
    let runs = [
        // Right credentials: a build, then a hit, then the whole deploy.
        with("ensure-base", &[], PASSWORD, &token),
        with("ensure-base", &[], PASSWORD, &token),
        with("build", &[], PASSWORD, &token),
        // Refused ones: a wrong registry password (exit 3), a wrong token
        // (a warning), and a wrong token under --require-cache (exit 3).
        with("ensure-base", &["--force"], WRONG_PASSWORD, &token),
        with("ensure-base", &[], PASSWORD, &wrong_token),
        with("ensure-base", &["--require-cache"], PASSWORD, &wrong_token),
    ];
    let mut codes = Vec::new();
    for args in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = project.cachectl(&args, &debug);
        codes.push(run.code);
        if codes.len() == 4 {
            // Regression: a 401 on a blob during the push was exit 1.
            assert_eq!(run.code, 3, "a wrong registry password: {}", run.stderr);
            assert!(run.stderr.contains("401"), "{}", run.stderr);
        }
        captured.push_str(&run.stdout);
        captured.push_str(&run.stderr);
    }
    assert_eq!(codes[..3], [0, 0, 0], "{captured}");
    assert_eq!(codes[3], 3, "a wrong registry password is exit 3");
    assert_eq!(codes[4], 0, "a wrong cache token is only a warning");
    assert_eq!(codes[5], 3, "a wrong cache token under --require-cache");
    // Credentials through the environment, as CI passes them.
    let run = project.cachectl(
        &["ensure-base", "--json"],
        &[
            ("RUST_LOG", "debug"),
            ("CACHECTL_REGISTRY_USER", "ci"),
            ("CACHECTL_REGISTRY_PASSWORD", PASSWORD),
            ("CACHECTL_CACHE_TOKEN", &token),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    captured.push_str(&run.stdout);
    captured.push_str(&run.stderr);
    let help = project.cachectl(
        &["ensure-base", "--help"],
        &[
            ("CACHECTL_REGISTRY_PASSWORD", PASSWORD),
            ("CACHECTL_CACHE_TOKEN", &token),
        ],
    );
    captured.push_str(&help.stdout);

    let events = server.get_json("/v1/events?limit=1000", Some(&admin)).await;
    assert!(
        events["events"].as_array().is_some_and(|e| !e.is_empty()),
        "no deploy events were stored: {events}"
    );
    captured.push_str(&events.to_string());
    captured.push_str(&server.logs());
    captured.push_str(&std::fs::read_to_string(&outputs).unwrap_or_default());
    captured.push_str(&all_text_under(server.data_dir()));
    captured.push_str(&all_text_under(&project.path().join(".cachectl")));
    assert!(server.stop(), "the server stops cleanly");
    captured.push_str(&server.logs());

    for secret in [
        PASSWORD,
        WRONG_PASSWORD,
        token.as_str(),
        wrong_token.as_str(),
        admin.as_str(),
    ] {
        assert!(
            !captured.contains(secret),
            "a secret leaked: {}",
            &secret[..6]
        );
    }
    eprintln!(
        "{} bytes of output, logs, events and state searched: no secret",
        captured.len()
    );
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM.
fn self_signed(folder: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a certificate");
    let cert = folder.join("cert.pem");
    let key = folder.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_self_signed_certificate_and_cachectl_cacert() {
    let folder = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(folder.path());
    let server = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]),
    );
    let https = format!("https://localhost:{}", server.address().port());
    let trusted = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();

    // A blob round trip over TLS.
    let content = cachectl_e2e::data::random_bytes(3 << 20, 77);
    let name = cachectl_e2e::data::digest(&content);
    let url = format!("{https}/v1/cas/{name}");
    let put = trusted
        .put(&url)
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let body = trusted
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(cachectl_e2e::data::digest(&body), name);

    // A client that does not trust the certificate is refused, and plain
    // HTTP to the TLS port gets no answer; the server carries on.
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        untrusting
            .get(format!("{https}/healthz"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(server.url("/healthz"))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );
    assert_eq!(
        trusted
            .get(format!("{https}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // cachectl over TLS: --cacert makes the records work...
    let project = Project::native_with_cache("oci:./build/oci", &https, 0);
    let cacert = ["--cacert", cert.to_str().unwrap()];
    let first = project
        .cachectl(
            &[&["ensure-base", "--json", "--require-cache"][..], &cacert].concat(),
            &[],
        )
        .success()
        .json();
    assert_eq!(first["source"], "built");
    let second = project
        .cachectl(
            &[&["ensure-base", "--json", "--require-cache"][..], &cacert].concat(),
            &[],
        )
        .success()
        .json();
    assert_eq!(second["source"], "cache", "{second}");
    // ...without it the certificate is not trusted: a warning, or exit 3
    // under --require-cache.
    let untrusted = project.cachectl(&["ensure-base", "--json"], &[]);
    assert_eq!(untrusted.code, 0, "{}", untrusted.stderr);
    assert!(untrusted.stderr.contains("warning"), "{}", untrusted.stderr);
    let required = project.cachectl(&["ensure-base", "--json", "--require-cache"], &[]);
    assert_eq!(required.code, 3, "{}", required.stderr);
    // A --cacert that is not a certificate is a usage error.
    let bad = project.cachectl(&["ensure-base", "--cacert", "requirements.txt"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
