//! Start-up, graceful shutdown and interrupted uploads of a real
//! `cache-server` process.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_proto::routes;
use cachectl_e2e::data::{digest, files_under, random_bytes};
use cachectl_e2e::{Backend, CacheServer, S3Server, ServerOptions};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn first_log_line_names_the_bound_address() {
    let server = CacheServer::local();
    let logs = server.logs();
    let first = logs.lines().next().unwrap_or_default();
    let address = server.base_url().trim_start_matches("http://").to_owned();
    assert!(
        first.ends_with(&format!("listening on {address}")),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_upload_finish() {
    let mut server = CacheServer::local();
    let content = random_bytes(16 * MIB, 60);
    let d = digest(&content);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let upload = {
        let client = server.client.clone();
        let url = server.url(&routes::cas(&d));
        let body = reqwest::Body::wrap_stream(tokio_stream_from(receiver));
        tokio::spawn(async move {
            client
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, 16 * MIB)
                .body(body)
                .send()
                .await
                .map(|response| response.status())
        })
    };
    let (first_half, second_half) = content.split_at(8 * MIB);
    sender
        .send(Ok(Bytes::copy_from_slice(first_half)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.service().expect("running").signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender
        .send(Ok(Bytes::copy_from_slice(second_half)))
        .await
        .unwrap();
    drop(sender);

    assert_eq!(upload.await.unwrap().unwrap(), StatusCode::CREATED);
    let exited_cleanly = server
        .service()
        .expect("running")
        .wait_exit(Duration::from_secs(30));
    assert!(exited_cleanly, "{}", server.logs());
    assert!(
        server.logs().contains("shut down cleanly"),
        "{}",
        server.logs()
    );

    server.start_again();
    let body = server
        .client
        .get(server.url(&routes::cas(&d)))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), StatusCode::OK);
    assert!(body.bytes().await.unwrap() == content);
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context))
}

/// Sends the head and part of an upload, then hangs up.
async fn abandon_upload(server: &CacheServer, length: usize, sent: usize) -> cache_proto::Digest {
    let content = random_bytes(length, 70);
    let d = digest(&content);
    let address = server.base_url().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n",
        routes::cas(&d)
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&content[..sent]).await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(socket);
    d
}

async fn assert_nothing_published(server: &CacheServer, d: &cache_proto::Digest) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leftovers = files_under(&server.objects_root().join("cas"));
        if leftovers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in storage: {leftovers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = server
        .client
        .head(server.url(&routes::cas(d)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let stats = server.stats().await;
    assert_eq!(stats.stored.blobs, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_upload_publishes_nothing_locally() {
    let server = CacheServer::local();
    let small = abandon_upload(&server, 4 * MIB, MIB).await;
    let large = abandon_upload(&server, 40 * MIB, 20 * MIB).await;
    assert_nothing_published(&server, &small).await;
    assert_nothing_published(&server, &large).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_upload_publishes_nothing_on_s3() {
    let s3 = S3Server::start();
    let server = CacheServer::start(Backend::s3(&s3, "abandon"), ServerOptions::default());
    let large = abandon_upload(&server, 40 * MIB, 20 * MIB).await;
    assert_nothing_published(&server, &large).await;
}

/// CPUs in a `Cpus_allowed_list` value (`0-1`, `0,2-3`, `1`).
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap());
    }
    cpus
}

/// The `Cpus_allowed_list` of a `/proc/.../status` file.
fn allowed_cpus(status_path: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    cpu_list(line)
}

/// The HTTP worker threads of process `pid`: (name, thread id, CPUs it
/// may run on), by name.
fn http_workers(pid: u32) -> Vec<(String, String, Vec<usize>)> {
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let name = name.trim();
        if name.starts_with("http-worker-") {
            let tid = task.file_name().unwrap().to_string_lossy().into_owned();
            let cpus = allowed_cpus(&task.join("status").display().to_string());
            workers.push((name.to_owned(), tid, cpus));
        }
    }
    workers.sort();
    workers
}

/// Nanoseconds thread `tid` of `pid` has run (`schedstat`).
fn ran_ns(pid: u32, tid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// By default there is one HTTP worker per CPU, each bound to its CPU,
/// and a client's requests are served by the worker on the client's CPU
/// (loopback packets arrive on the sender's CPU).
#[tokio::test(flavor = "multi_thread")]
async fn http_workers_are_bound_one_per_cpu_and_serve_their_cpus_clients() {
    let cpus = allowed_cpus("/proc/self/status");
    let threads = std::thread::available_parallelism().unwrap().get();
    let server = CacheServer::start(Backend::Local, ServerOptions::default());
    let pid = server.pid().unwrap();
    let workers = http_workers(pid);

    assert_eq!(workers.len(), threads, "{workers:?}");
    if cpus.len() < 2 || threads != cpus.len() {
        // One CPU, or a CPU quota below the CPUs visible: nothing to bind.
        assert!(
            workers.iter().all(|(_, _, allowed)| *allowed == cpus),
            "{workers:?}"
        );
        return;
    }
    let mut bound: Vec<usize> = workers
        .iter()
        .map(|(name, _, allowed)| {
            assert_eq!(allowed.len(), 1, "{name} is bound to one CPU: {allowed:?}");
            allowed[0]
        })
        .collect();
    bound.sort_unstable();
    assert_eq!(bound, cpus, "one worker on each CPU");

    let blob = random_bytes(4096, 41);
    let path = routes::cas(&digest(&blob));
    let put = server
        .client
        .put(server.url(&path))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    for &cpu in cpus.iter().take(2) {
        let before: Vec<u64> = workers.iter().map(|(_, tid, _)| ran_ns(pid, tid)).collect();
        // 2,000 GETs on one keep-alive connection from a client on `cpu`.
        let status = std::process::Command::new("taskset")
            .args(["-c", &cpu.to_string(), "curl", "-fsS", "-o", "/dev/null"])
            .arg(format!("{}?[1-2000]", server.url(&path)))
            .status()
            .unwrap();
        assert!(status.success());
        let ran: Vec<u64> = workers
            .iter()
            .zip(&before)
            .map(|((_, tid, _), before)| ran_ns(pid, tid) - before)
            .collect();
        let local = workers
            .iter()
            .position(|(_, _, allowed)| allowed[0] == cpu)
            .unwrap();
        let others = ran
            .iter()
            .enumerate()
            .filter(|(worker, _)| *worker != local)
            .map(|(_, ns)| *ns)
            .max()
            .unwrap_or(0);
        assert!(
            ran[local] > 10 * others,
            "the worker on CPU {cpu} served its client: ran {ran:?} ns (worker {local})"
        );
    }
}

/// `--http-cpu-affinity off`, its environment variable, and a number of
/// workers other than the CPUs' leave the workers unbound.
#[tokio::test(flavor = "multi_thread")]
async fn http_workers_are_unbound_when_told_or_not_one_per_cpu() {
    let cpus = allowed_cpus("/proc/self/status");
    let threads = cpus.len() + 1;
    let by_flag = ServerOptions::args(&["--http-cpu-affinity", "off"]);
    let by_env = ServerOptions {
        env: vec![("CACHE_SERVER_HTTP_CPU_AFFINITY".into(), "off".into())],
        ..ServerOptions::default()
    };
    let more = ServerOptions::args(&["--http-threads", &threads.to_string()]);
    for (how, options) in [
        ("flag", by_flag),
        ("environment", by_env),
        ("threads", more),
    ] {
        let server = CacheServer::start(Backend::Local, options);
        let workers = http_workers(server.pid().unwrap());
        assert!(!workers.is_empty(), "{how}");
        for (name, _, allowed) in &workers {
            assert_eq!(*allowed, cpus, "{how}: {name} may run on every CPU");
        }
        if how == "threads" {
            assert_eq!(workers.len(), threads, "--http-threads {threads}");
        }
        let response = server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{how}: serving");
    }
}
