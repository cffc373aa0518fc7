//! Hostile input against the real server: identifiers built to escape the
//! store, bodies that lie about their length or their compression, bad
//! ranges, huge headers and slow clients. Whatever arrives, the server
//! answers a 4xx (never a 5xx or a crash), stores nothing it could not
//! verify, and keeps serving everyone else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cachectl_e2e::data::{digest, files_under, random_bytes};
use cachectl_e2e::raw_http::{self, Outcome, closed_within, connect, exchange};
use cachectl_e2e::{Backend, CacheServer, ServerOptions};
use std::io::Write;

const WAIT: Duration = Duration::from_secs(10);

fn hardened_server() -> CacheServer {
    CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--header-timeout",
            "2",
            "--idle-timeout",
            "2",
            "--max-blob-size",
            "4MiB",
        ]),
    )
}

/// Objects in the storage folder (the index lives elsewhere in tests).
fn stored_files(server: &CacheServer) -> Vec<std::path::PathBuf> {
    files_under(&server.storage_dir())
}

/// The server still answers a plain request.
async fn assert_serving(server: &CacheServer) {
    // A new connection each time: the runtime of a test that blocks on
    // raw sockets may not have seen the server close a pooled one.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client
        .get(server.url("/healthz"))
        .timeout(WAIT)
        .send()
        .await
        .expect("the server still answers");
    assert!(response.status().is_success());
}

fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nhost: cache\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn status_of(address: SocketAddr, request: &[u8]) -> Option<u16> {
    exchange(address, request, WAIT).status()
}

#[tokio::test]
async fn identifiers_built_to_escape_the_store_are_refused_before_any_io() {
    let server = hardened_server();
    let address = server.address();
    let overlong = "a".repeat(5000);
    let hex63 = "a".repeat(63);
    let hex65 = "a".repeat(65);
    let upper = "A".repeat(64);
    // Refused by every protocol.
    let hostile = [
        "..",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..%5C..%5Cwindows",
        "a%00b",
        "%00",
        "caf%C3%A9",
        "%F0%9F%92%A3",
        "%FF%FE",
        ".hidden",
        "a%2Fb",
        "~root",
        "a%20b",
        overlong.as_str(),
    ];
    // Well-formed opaque keys for the compatibility protocols, but not
    // 64 lowercase hex digits: refused where a digest or key is required.
    let not_a_digest = [hex63.as_str(), hex65.as_str(), upper.as_str()];
    let raw_paths = [
        "/v1/cas/../../../../etc/passwd",
        "/v1/ac/../index.sqlite",
        "/ccache/../../x",
        "/cache/..",
        "/v1/cas/./aaaa",
    ];
    let digest_families = [
        "/v1/cas/",
        "/v1/ac/",
        "/v1/leases/",
        "/bazel/cas/",
        "/bazel/ac/",
    ];
    let opaque_families = [
        "/v8/artifacts/",
        "/v1/cache/",
        "/cache/",
        "/ccache/",
        "/ccache/ab/",
    ];
    let body = b"{\"holder\":\"x\",\"ttl_seconds\":5}";
    let mut tried = 0;
    let cases = digest_families
        .iter()
        .flat_map(|family| {
            hostile
                .iter()
                .chain(&not_a_digest)
                .map(move |s| (*family, *s))
        })
        .chain(
            opaque_families
                .iter()
                .flat_map(|family| hostile.iter().map(move |s| (*family, *s))),
        );
    for (family, segment) in cases {
        let path = format!("{family}{segment}");
        for method in ["PUT", "GET", "HEAD", "POST", "DELETE"] {
            tried += 1;
            let outcome = exchange(address, &request(method, &path, "", body), WAIT);
            match outcome.status() {
                Some(status) => assert!(
                    (400..500).contains(&status),
                    "{method} {path} answered {status}, not a client error"
                ),
                None => panic!("{method} {path}: no answer ({outcome:?})"),
            }
        }
    }
    for path in raw_paths {
        for method in ["PUT", "GET"] {
            tried += 1;
            let status = status_of(address, &request(method, path, "", b"x"));
            assert!(
                status.is_some_and(|s| (400..500).contains(&s)),
                "{method} {path} answered {status:?}"
            );
        }
    }
    assert!(
        stored_files(&server).is_empty(),
        "hostile names stored something: {:?}",
        stored_files(&server)
    );
    let outside: Vec<_> = files_under(server.data_dir())
        .into_iter()
        .filter(|path| !path.starts_with(server.storage_dir()))
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("index.sqlite"))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "files written outside storage: {outside:?}"
    );
    assert_serving(&server).await;
    eprintln!("{tried} hostile identifiers refused");
}

#[tokio::test]
async fn a_body_shorter_or_longer_than_its_content_length_never_lands() {
    let server = hardened_server();
    let address = server.address();
    let content = random_bytes(100_000, 1);
    let full = digest(&content);

    // Declares more than it sends, then hangs up: the body is cut short.
    let mut stream = connect(address, WAIT);
    let head = format!(
        "PUT /v1/cas/{full} HTTP/1.1\r\nhost: cache\r\ncontent-length: {}\r\n\r\n",
        content.len() * 2
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&content).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let outcome = raw_http::read_response(&mut stream, WAIT);
    assert!(
        !matches!(outcome.status(), Some(200..=299)),
        "a truncated body was accepted: {outcome:?}"
    );

    // Declares more than it sends and stalls: cut off by the idle timeout.
    let started = Instant::now();
    let mut stream = connect(address, WAIT);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&content).unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(8)),
        "a stalled upload held its connection"
    );
    let held = started.elapsed();
    assert!(held >= Duration::from_secs(1), "closed too early: {held:?}");

    // Declares less than it sends: the declared bytes are the body, and
    // they do not hash to the digest, so nothing is stored; the surplus
    // is not taken as a request.
    let outcome = exchange(
        address,
        &{
            let mut bytes = format!(
                "PUT /v1/cas/{full} HTTP/1.1\r\nhost: cache\r\ncontent-length: {}\r\n\r\n",
                content.len() / 2
            )
            .into_bytes();
            bytes.extend_from_slice(&content);
            bytes
        },
        WAIT,
    );
    assert_eq!(outcome.status(), Some(400), "{outcome:?}");

    let head = server
        .client
        .head(server.url(&format!("/v1/cas/{full}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(
        stored_files(&server).is_empty(),
        "{:?}",
        stored_files(&server)
    );

    // The honest upload still works.
    let put = server
        .client
        .put(server.url(&format!("/v1/cas/{full}")))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
}

#[tokio::test]
async fn truncated_malformed_and_bomb_zstd_bodies_are_refused_and_bounded() {
    let server = hardened_server();
    let content = random_bytes(300_000, 2);
    let name = digest(&content);
    let compressed = zstd::encode_all(&content[..], 3).unwrap();
    let url = server.url(&format!("/v1/cas/{name}"));
    let zstd_put = |body: Vec<u8>, url: String| {
        let client = server.client.clone();
        async move {
            client
                .put(url)
                .header("content-encoding", "zstd")
                .body(body)
                .timeout(WAIT)
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        }
    };
    // 1 GiB of zeros in a few kilobytes, to be cut off at the 4 MiB limit.
    // Made before the first request: it takes about 2 s on a slow machine,
    // longer than the server's 2 s --idle-timeout, which would close the
    // client's pooled connection in between (IncompleteMessage on reuse).
    let zeros = vec![0u8; 1 << 20];
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());

    let truncated = compressed[..compressed.len() / 2].to_vec();
    assert_eq!(zstd_put(truncated, url.clone()).await, 400);
    let mut corrupt = compressed.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    corrupt[middle + 1] ^= 0x55;
    assert_eq!(zstd_put(corrupt, url.clone()).await, 400);
    assert_eq!(zstd_put(random_bytes(50_000, 3), url.clone()).await, 400);
    assert_eq!(
        zstd_put(b"\x28\xb5\x2f\xfd".to_vec(), url.clone()).await,
        400
    );

    // The bomb: cut off at the 4 MiB limit.
    let bomb_name = digest(b"whatever it claims");
    let started = Instant::now();
    let status = zstd_put(bomb, server.url(&format!("/v1/cas/{bomb_name}"))).await;
    assert_eq!(status, 413);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the bomb was decompressed past the limit ({:?})",
        started.elapsed()
    );
    let rss = cachectl_e2e::process::peak_rss(server.pid().expect("the server runs")).unwrap();
    assert!(rss < 200 << 20, "peak RSS {} MiB", rss >> 20);
    assert!(
        stored_files(&server).is_empty(),
        "{:?}",
        stored_files(&server)
    );

    // The real thing still goes in.
    assert_eq!(zstd_put(compressed, url).await, 201);
}

#[tokio::test]
async fn malformed_ranges_get_the_whole_blob_or_a_416_never_an_error() {
    let server = hardened_server();
    let content = random_bytes(10_000, 4);
    let name = digest(&content);
    let url = server.url(&format!("/v1/cas/{name}"));
    server
        .client
        .put(&url)
        .body(content.clone())
        .send()
        .await
        .unwrap();
    let many = (0..2000)
        .map(|i| format!("{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let long_many = format!("bytes={many}");
    let ranges = [
        "bytes=",
        "bytes=5-2",
        "bytes=-0",
        "bytes=abc",
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=99999999999999999999999-",
        "bytes=--1",
        "bytes=- 5",
        "bytes=0x10-0x20",
        "bytes=10000-",
        "bytes=18446744073709551615-18446744073709551615",
        "bytes=0-18446744073709551615",
        "bytes=-18446744073709551615",
        "bytes=\u{00e9}-1",
        long_many.as_str(),
    ];
    for range in ranges {
        let response = server
            .client
            .get(&url)
            .header("range", range)
            .timeout(WAIT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Range {range:?}: {e}"));
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        match status {
            200 => assert_eq!(&body[..], &content[..], "Range {range:?}"),
            206 => {
                assert!(!body.is_empty(), "Range {range:?}");
                assert!(
                    content.windows(body.len()).any(|w| w == &body[..]),
                    "Range {range:?} answered bytes that are not in the blob"
                );
            }
            416 => {}
            other => panic!("Range {range:?} answered {other}"),
        }
    }
    assert_serving(&server).await;
}

#[tokio::test]
async fn huge_headers_are_refused_and_the_server_goes_on() {
    let server = hardened_server();
    let address = server.address();
    let one_big = format!("x-big: {}\r\n", "a".repeat(1 << 20));
    let many: String = (0..20_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_auth = format!("authorization: Bearer {}\r\n", "t".repeat(600_000));
    for headers in [one_big, many, long_auth] {
        let outcome = exchange(address, &request("GET", "/healthz", &headers, b""), WAIT);
        match outcome {
            Outcome::Answered(response) => assert!(
                matches!(response.status, 400 | 401 | 431),
                "answered {}",
                response.status
            ),
            Outcome::Closed => {}
            Outcome::TimedOut => panic!("no answer to a huge header"),
        }
    }
    assert_serving(&server).await;
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let server = hardened_server();
    let address = server.address();

    // Fifty connections trickling a request head one byte a second.
    let trickling: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = connect(address, WAIT);
                let started = Instant::now();
                for byte in b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-slow: aaaaaaaaaaaaaa" {
                    if stream.write_all(&[*byte]).is_err() {
                        return started.elapsed();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    if started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    // Meanwhile others are served promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let started = Instant::now();
        assert_serving(&server).await;
        // Answered while the slow connections are still open (they live
        // about 2 s), with room for a loaded CI machine.
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    for thread in trickling {
        let held = thread.join().unwrap();
        assert!(
            held < Duration::from_secs(10),
            "a slowloris connection was held {held:?}"
        );
    }

    // A keep-alive connection left idle is closed after the idle timeout.
    let mut stream = connect(address, WAIT);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: idle\r\n\r\n")
        .unwrap();
    let answered = raw_http::read_response(&mut stream, WAIT);
    assert_eq!(answered.status(), Some(200));
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(10)));
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A connection that never sends a byte is closed too.
    let mut silent = connect(address, WAIT);
    assert!(closed_within(&mut silent, Duration::from_secs(10)));
    assert_serving(&server).await;
}

/// A message above the gRPC limit was refused as such.
fn assert_too_large(status: &tonic::Status) {
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn grpc_oversized_messages_junk_and_silent_connections_are_refused_and_nothing_lands() {
    use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
    use bazel_remote_apis::google::bytestream as bs;
    use cachectl_e2e::grpc;
    use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
    use std::io::Read;

    let (server, port) = grpc::server(&[]);
    let channel = grpc::channel(port).await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    // A message above the server's limit (4 MiB and room around it).
    let big = grpc::content(6 * 1024 * 1024, 11);
    let digest = grpc::sha256(&big);
    let refused = cas
        .batch_update_blobs(grpc::update(&[(&digest, &big)], 0))
        .await
        .unwrap_err();
    assert_too_large(&refused);
    // The same bytes as one ByteStream message.
    let mut bytestream = bs::byte_stream_client::ByteStreamClient::new(channel.clone());
    let resource = format!("uploads/big/blobs/{}/{}", digest.hash, digest.size_bytes);
    let refused = bytestream
        .write(grpc::requests(
            grpc::write_requests(&resource, &big, 0, big.len(), true),
            None,
        ))
        .await
        .unwrap_err();
    assert_too_large(&refused);
    assert_eq!(grpc::missing(&mut cas, &[&digest]).await.len(), 1);

    // HTTP/1.1 and junk on the gRPC port: the connection is closed.
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for junk in [
        b"GET /v1/cas/x HTTP/1.1\r\nhost: x\r\n\r\n".as_slice(),
        &[0xffu8; 4096],
    ] {
        let mut stream = connect(address, WAIT);
        let _ = stream.write_all(junk);
        assert!(closed_within(&mut stream, WAIT));
    }
    // A connection that sends nothing is closed (after 10 s).
    let mut silent = connect(address, WAIT);
    let started = Instant::now();
    let mut byte = [0u8; 1];
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let read = silent.read(&mut byte);
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(25));

    // Still serving, nothing stored by any of it.
    assert_eq!(grpc::missing(&mut cas, &[&digest]).await.len(), 1);
    assert_serving(&server).await;
}

#[tokio::test]
async fn a_grpc_reader_that_stops_reading_holds_up_no_one_and_no_memory() {
    use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
    use bazel_remote_apis::google::bytestream as bs;
    use cachectl_e2e::grpc;
    use reapi::content_addressable_storage_client::ContentAddressableStorageClient;

    let (server, port) = grpc::server(&[]);
    let channel = grpc::channel(port).await;
    let mut bytestream = bs::byte_stream_client::ByteStreamClient::new(channel.clone());
    let size = 96 * 1024 * 1024;
    let blob = random_bytes(size, 12);
    let digest = grpc::sha256(&blob);
    let resource = format!("uploads/s/blobs/{}/{}", digest.hash, digest.size_bytes);
    bytestream
        .write(grpc::requests(
            grpc::write_requests(&resource, &blob, 0, 1024 * 1024, true),
            None,
        ))
        .await
        .unwrap();
    drop(blob);
    let pid = server.pid().unwrap();
    let before = resident_bytes(pid);

    // A reader on its own connection takes one message, then stops reading.
    let mut stalled = bs::byte_stream_client::ByteStreamClient::new(grpc::channel(port).await);
    let mut stream = stalled
        .read(bs::ReadRequest {
            resource_name: format!("blobs/{}/{}", digest.hash, digest.size_bytes),
            read_offset: 0,
            read_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.data.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everyone else is served meanwhile.
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let small = b"served while another reader stalls".as_slice();
    let dsmall = grpc::sha256(small);
    for round in 0..20 {
        let started = Instant::now();
        let response = cas
            .batch_update_blobs(grpc::update(&[(&dsmall, small)], 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.responses[0].status.as_ref().unwrap().code, 0);
        let read = grpc::read_all(
            &mut bytestream,
            &format!("blobs/{}/{}", digest.hash, digest.size_bytes),
            round * 1024 * 1024,
            64 * 1024,
        )
        .await
        .unwrap();
        assert_eq!(read.len(), 64 * 1024);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    // The stalled read is not buffered in the server.
    let during = resident_bytes(pid);
    assert!(
        during < before + 32 * 1024 * 1024,
        "the server grew from {before} to {during} bytes while a reader stalled"
    );
    drop(stream);
    drop(stalled);
    assert_serving(&server).await;
}
