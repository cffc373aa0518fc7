//! Tokens and scopes on the real server: every route, native and
//! compatible, needs the right scope; tokens are stored hashed, expire,
//! are revoked, and never reach the logs.

use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};
use reqwest::{Method, StatusCode};

fn hex64(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// Every route with the scope it needs (`None`: open to anyone).
fn routes() -> Vec<(Method, String, Option<&'static str>)> {
    let digest = hex64(0xab);
    let key40 = "0123456789abcdef0123456789abcdef01234567";
    let mut routes = vec![
        (Method::GET, "/healthz".to_owned(), None),
        (Method::GET, "/readyz".to_owned(), None),
        (Method::GET, format!("/v1/cas/{digest}"), Some("read")),
        (Method::HEAD, format!("/v1/cas/{digest}"), Some("read")),
        (Method::PUT, format!("/v1/cas/{digest}"), Some("write")),
        (Method::POST, "/v1/cas/missing".to_owned(), Some("read")),
        (Method::POST, "/v1/cas/batch".to_owned(), Some("write")),
        (Method::POST, "/v1/cas/batch-get".to_owned(), Some("read")),
        (Method::GET, format!("/v1/ac/{digest}"), Some("read")),
        (Method::PUT, format!("/v1/ac/{digest}"), Some("write")),
        (Method::DELETE, format!("/v1/ac/{digest}"), Some("write")),
        (Method::POST, format!("/v1/leases/{digest}"), Some("write")),
        (Method::GET, "/v1/stats".to_owned(), Some("admin")),
        (Method::GET, "/metrics".to_owned(), Some("admin")),
        (Method::GET, "/v1/tokens".to_owned(), Some("admin")),
        (Method::GET, "/v8/artifacts/status".to_owned(), Some("read")),
        (Method::GET, "/v8/artifacts/abc123".to_owned(), Some("read")),
        (
            Method::PUT,
            "/v8/artifacts/abc123".to_owned(),
            Some("write"),
        ),
        (Method::POST, "/v8/artifacts".to_owned(), Some("read")),
        (
            Method::GET,
            format!("/ccache/{}/{}", &key40[..2], &key40[2..]),
            Some("read"),
        ),
        (Method::PUT, format!("/ccache/{key40}"), Some("write")),
        (Method::DELETE, format!("/ccache/{key40}"), Some("write")),
        (Method::GET, "/cache/0a1b2c".to_owned(), Some("read")),
        (Method::PUT, "/cache/0a1b2c".to_owned(), Some("write")),
        (Method::GET, "/v1/cache/123456".to_owned(), Some("read")),
        (Method::PUT, "/v1/cache/123456".to_owned(), Some("write")),
        (Method::GET, format!("/cas/{digest}"), Some("read")),
        (Method::PUT, format!("/prefix/ac/{digest}"), Some("write")),
    ];
    routes.sort_by(|a, b| a.1.cmp(&b.1));
    routes
}

fn rank(scope: &str) -> u8 {
    match scope {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}

async fn status_of(
    server: &CacheServer,
    method: &Method,
    path: &str,
    auth: Option<&str>,
) -> StatusCode {
    let mut request = server.client.request(method.clone(), server.url(path));
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    if *method == Method::POST && path.ends_with("missing") {
        request = request.body(r#"{"digests":[]}"#);
    } else if *method == Method::POST && path == "/v8/artifacts" {
        request = request.body(r#"{"hashes":[]}"#);
    } else if *method == Method::POST {
        request = request.body(r#"{"holder":"t","ttl_seconds":5}"#);
    } else if *method == Method::PUT {
        request = request.body("x");
    }
    request.send().await.expect("request").status()
}

#[tokio::test]
async fn every_route_checks_its_scope() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let tokens: Vec<(&str, String)> = ["read", "write", "admin"]
        .into_iter()
        .map(|scope| {
            (
                scope,
                server.create_token(scope, &format!("t-{scope}"), &[]),
            )
        })
        .collect();
    for (method, path, needed) in routes() {
        let anonymous = status_of(&server, &method, &path, None).await;
        match needed {
            None => assert!(anonymous.is_success(), "{method} {path}: {anonymous}"),
            Some(_) => assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}"),
        }
        for (scope, token) in &tokens {
            let status = status_of(&server, &method, &path, Some(token)).await;
            let allowed = needed.is_none_or(|needed| rank(scope) >= rank(needed));
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} with a {scope} token: {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with a {scope} token"
                );
            }
        }
    }
    let wrong = status_of(
        &server,
        &Method::GET,
        "/v8/artifacts/status",
        Some("cct_wrong"),
    )
    .await;
    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_stored_hashed_expire_are_revoked_and_stay_out_of_logs() {
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let writer = server.create_token("write", "ci", &[]);
    let short = server.create_token("read", "short", &["--expires", "1s"]);
    let path = format!("/v1/cas/{}", cache_proto::Digest::of(b"hello"));

    // Bearer, and Basic with the token as password (ccache, Gradle).
    let put = server
        .client
        .put(server.url(&path))
        .bearer_auth(&writer)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let basic = server
        .client
        .get(server.url(&path))
        .basic_auth("anyone", Some(&writer))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(
        status_of(&server, &Method::GET, &path, Some(&short)).await,
        StatusCode::OK
    );

    // Expired.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        status_of(&server, &Method::GET, &path, Some(&short)).await,
        StatusCode::UNAUTHORIZED
    );

    // Revoked by name; listed with its state, never its secret.
    let revoke = server.run_args(&["token", "revoke", "ci"]);
    assert!(revoke.status.success());
    let error = server
        .client
        .get(server.url(&path))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert!(
        error
            .headers()
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("Basic")),
        "a 401 offers Basic"
    );
    let body = error.text().await.unwrap();
    assert!(!body.contains(&writer), "the error body echoes the token");
    let list = server.run_args(&["token", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.contains("revoked") && listed.contains("expired"),
        "{listed}"
    );
    assert!(
        !listed.contains(&writer) && !listed.contains(&short),
        "{listed}"
    );

    // Over HTTP with an admin token: create and list.
    let admin = server.create_token("admin", "root", &[]);
    let created: serde_json::Value = server
        .client
        .post(server.url("/v1/tokens"))
        .bearer_auth(&admin)
        .body(r#"{"scope":"read","name":"laptop","expires":"30d"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let laptop = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status_of(&server, &Method::GET, &path, Some(&laptop)).await,
        StatusCode::OK
    );
    let listed = server
        .get_json("/v1/tokens", Some(&admin))
        .await
        .to_string();
    assert!(
        listed.contains("laptop") && !listed.contains(&laptop),
        "{listed}"
    );

    // Neither the index nor the logs hold a token in clear.
    let mut index = std::fs::read(server.index_path()).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut name = server.index_path().into_os_string();
        name.push(suffix);
        index.extend(std::fs::read(name).unwrap_or_default());
    }
    let logs = server.logs();
    for secret in [&writer, &short, &admin, &laptop] {
        assert!(
            !index.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a token is stored in clear"
        );
        assert!(!logs.contains(secret.as_str()), "a token reached the logs");
    }
}

#[tokio::test]
async fn anonymous_read_lets_reads_through_and_keeps_writes_for_tokens() {
    let server = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&["--auth", "anonymous-read"]),
    );
    let writer = server.create_token("write", "ci", &[]);
    let path = format!("/v1/cas/{}", cache_proto::Digest::of(b"x"));
    assert_eq!(
        status_of(&server, &Method::PUT, &path, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(&server, &Method::PUT, &path, Some(&writer)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&server, &Method::GET, &path, None).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&server, &Method::GET, "/v1/stats", None).await,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn an_exposed_server_without_tokens_refuses_to_start() {
    let server = CacheServer::local();
    // Checked before binding: nothing listens on the wildcard address.
    let output = server.run_args(&["--listen", "0.0.0.0:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--auth off"), "{stderr}");
    // On loopback the default is off.
    assert!(server.logs().contains("auth Off"), "{}", server.logs());
}

/// Regression: a refused upload of more than a few KiB was answered without
/// reading its body, and the connection then closed without `Connection:
/// close`, so the client's next request on it failed (Bazel:
/// `ClosedChannelException`). Refused bodies are read; one too large to
/// read is answered with `Connection: close`.
#[test]
fn a_refused_upload_leaves_the_kept_alive_connection_usable() {
    use cachectl_e2e::raw_http::{Outcome, closed_within, connect, read_response};
    use std::io::Write;
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let reader = server.create_token("read", "laptop", &[]);
    let wait = std::time::Duration::from_secs(10);
    let mut stream = connect(server.address(), wait);
    let body = vec![b'x'; 256 * 1024];
    let put = |stream: &mut std::net::TcpStream, auth: &str| {
        let head = format!(
            "PUT /ac/{} HTTP/1.1\r\nHost: cache\r\n{auth}Content-Length: {}\r\n\r\n",
            hex64(0x42),
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        read_response(stream, wait)
    };
    let healthz = |stream: &mut std::net::TcpStream| {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: cache\r\n\r\n")
            .unwrap();
        read_response(stream, wait).status()
    };
    // No token (401), then a read-only token (403): each answered, and the
    // same connection serves the next request.
    assert_eq!(put(&mut stream, "").status(), Some(401));
    assert_eq!(healthz(&mut stream), Some(200));
    let bearer = format!("Authorization: Bearer {reader}\r\n");
    assert_eq!(put(&mut stream, &bearer).status(), Some(403));
    assert_eq!(healthz(&mut stream), Some(200));

    // A body too large to read: refused at once, with Connection: close,
    // and the server closes the connection.
    let mut stream = connect(server.address(), wait);
    let head = format!(
        "PUT /ac/{} HTTP/1.1\r\nHost: cache\r\nContent-Length: {}\r\n\r\n",
        hex64(0x43),
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).unwrap();
    let Outcome::Answered(response) = read_response(&mut stream, wait) else {
        panic!("no answer to a refused large upload");
    };
    assert_eq!(response.status, 401);
    assert!(
        response
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        response.text
    );
    assert!(closed_within(&mut stream, wait));
}

/// Tokens are checked from memory, not SQLite, on the hot path: a token
/// created or revoked by `cache-server token` beside a busy server still
/// works, or stops working, with the very next request, round after round,
/// while other requests with the same token keep its cache entry warm, and
/// while busy threads (two per core) load the machine: the promise holds
/// whether or not the server's file-watch thread has run since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_changes_reach_a_busy_server_with_the_next_request() {
    let _load = cachectl_e2e::cpu_load::CpuLoad::start(2);
    let server = CacheServer::start(Backend::Local, ServerOptions::args(&["--auth", "required"]));
    let writer = server.create_token("write", "writer", &[]);
    let blob = b"read me while tokens come and go".to_vec();
    let path = format!("/v1/cas/{}", cachectl_e2e::data::digest(&blob));
    let put = server
        .client
        .put(server.url(&path))
        .bearer_auth(&writer)
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    for round in 0..12 {
        let name = format!("reader-{round}");
        let reader = server.create_token("read", &name, &[]);
        assert_eq!(
            status_of(&server, &Method::GET, &path, Some(&reader)).await,
            StatusCode::OK,
            "round {round}: a token just created is refused"
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let (client, url, reader, stop) = (
                server.client.clone(),
                server.url(&path),
                reader.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = client.get(&url).bearer_auth(&reader).send().await;
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let revoke = server.run_args(&["token", "revoke", &name]);
        assert!(revoke.status.success(), "round {round}: revoke failed");
        for attempt in 0..20 {
            assert_eq!(
                status_of(&server, &Method::GET, &path, Some(&reader)).await,
                StatusCode::UNAUTHORIZED,
                "round {round}, request {attempt} after the revocation: the revoked token still reads"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        busy.await.unwrap();
    }
}
