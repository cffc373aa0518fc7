//! The cache server when what it depends on misbehaves: an S3 server that
//! is slow, silent, resets connections, answers 500 or is stopped (through
//! a fault-injecting proxy in front of a real `s3s-fs`), and a local disk
//! that fills up (a small tmpfs). Clients get a prompt 503 or 507, never a
//! hang or a corrupt object, and service comes back by itself.

use std::process::Command;
use std::time::{Duration, Instant};

use cachectl_e2e::api::{try_get_blob, try_put_blob};
use cachectl_e2e::data::{digest, files_under, random_bytes};
use cachectl_e2e::{Backend, CacheServer, Fault, FaultProxy, S3Server, ServerOptions};

/// What a client may wait, at most, for any answer: the storage timeout
/// per call, a couple of calls, and slack for a loaded machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(12);

/// How long one request may take before it counts as no answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn put(server: &CacheServer, content: &[u8]) -> (u16, Duration) {
    let started = Instant::now();
    let (base, name) = (server.base_url(), digest(content));
    let put = try_put_blob(&server.client, &base, &name, content.to_vec());
    let status = match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
        Ok(Ok(status)) => status.as_u16(),
        _ => 0,
    };
    (status, started.elapsed())
}

async fn get(server: &CacheServer, content: &[u8]) -> (u16, Duration) {
    let started = Instant::now();
    let (base, name) = (server.base_url(), digest(content));
    let get = try_get_blob(&server.client, &base, &name);
    let status = match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
        Ok(Ok((status, body))) if status == 200 => {
            assert_eq!(digest(&body), digest(content), "a wrong body was served");
            200
        }
        Ok(Ok((status, _))) => status.as_u16(),
        // No answer, or the headers went out before storage failed: the
        // body is cut short, which the client sees as an error.
        _ => 0,
    };
    (status, started.elapsed())
}

async fn readyz(server: &CacheServer) -> u16 {
    server
        .client
        .get(server.url("/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_silent_failing_or_stopped_s3_gives_prompt_503s_and_service_recovers() {
    let mut s3 = S3Server::start();
    let proxy = FaultProxy::start(s3.address());
    let server = CacheServer::start(
        Backend::s3_via(&s3, "faults", proxy.address()),
        ServerOptions::args(&["--storage-timeout", "2"]),
    );
    // Stored before the faults: larger than the in-memory hot cache, so
    // reading it needs S3.
    let stored = random_bytes(3 << 20, 1);
    assert_eq!(put(&server, &stored).await.0, 201);

    let faults = [Fault::Slow, Fault::Silent, Fault::Reset, Fault::ServerError];
    for (round, fault) in faults.into_iter().chain([Fault::None]).enumerate() {
        let stopped = fault == Fault::None;
        if stopped {
            s3.stop();
        } else {
            proxy.set(fault);
        }
        let fresh = random_bytes(2 << 20, 100 + round as u64);
        let (status, took) = put(&server, &fresh).await;
        assert_eq!(
            status, 503,
            "{fault:?} (stopped: {stopped}): PUT answered {status}"
        );
        assert!(took < ANSWER_WITHIN, "{fault:?}: PUT took {took:?}");
        let (status, took) = get(&server, &stored).await;
        assert!(
            matches!(status, 503 | 0),
            "{fault:?}: GET answered {status}"
        );
        assert!(took < ANSWER_WITHIN, "{fault:?}: GET took {took:?}");
        assert_eq!(readyz(&server).await, 503, "{fault:?}: /readyz");

        // Recovery: no restart, no intervention beyond S3 coming back.
        if stopped {
            s3.restart();
        } else {
            proxy.set(Fault::None);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if readyz(&server).await == 200 && get(&server, &stored).await.0 == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{fault:?}: no recovery in 20 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            put(&server, &fresh).await.0,
            201,
            "{fault:?}: PUT after recovery"
        );
        assert_eq!(get(&server, &fresh).await.0, 200);
        eprintln!("{fault:?} (stopped: {stopped}): 503s within the timeout, then recovered");
    }
}

/// A read whose storage fails after the answer began: the client's body is
/// cut short (never a wrong body), and the server says so in its log at the
/// default level, where requests are not logged one by one.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_storage_cuts_short_is_logged_at_the_default_level() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(s3.address());
    let server = CacheServer::start(
        Backend::s3_via(&s3, "cut", proxy.address()),
        ServerOptions::args(&["--storage-timeout", "30"]),
    );
    // Larger than the in-memory hot cache: it is streamed from S3.
    let stored = random_bytes(8 << 20, 7);
    assert_eq!(put(&server, &stored).await.0, 201);

    // S3 answers slowly, so the answer has begun long before its end...
    proxy.set(Fault::Slow);
    let response = server
        .client
        .get(server.url(&format!("/v1/cas/{}", digest(&stored))))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("the answer begins");
    assert_eq!(response.status().as_u16(), 200);
    // ...then S3's connections break under it.
    proxy.set(Fault::Reset);
    // An error is the body cut short, as the client should see it.
    if let Ok(body) = response.bytes().await {
        assert!(
            body.len() < stored.len(),
            "the whole body arrived although S3 broke mid-read"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.logs().contains("a response body failed mid-stream") {
        assert!(
            Instant::now() < deadline,
            "no log line for the read cut short:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !server.logs().contains("finished processing request"),
        "requests are logged one by one at the default level"
    );
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> Self {
        let folder = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(folder.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: the disk-full test needs root (as CI runs)"
        );
        Self { folder }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_507_keeps_what_is_stored_and_serves_reads() {
    let disk = SmallDisk::mount(48);
    // Another tenant of the disk, removed later to make room.
    let ballast = disk.folder.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 16 << 20]).unwrap();
    let storage = disk.folder.path().join("blobs");
    let server = CacheServer::start(Backend::Local, ServerOptions::default().in_folder(&storage));
    // Random content is stored raw, so the disk fills at its real size.
    let mut kept = Vec::new();
    let mut full_at = None;
    for round in 0..40u64 {
        let blob = random_bytes(4 << 20, 500 + round);
        let (status, took) = put(&server, &blob).await;
        assert!(took < ANSWER_WITHIN, "PUT took {took:?}");
        match status {
            201 => kept.push(blob),
            507 => {
                full_at = Some(round);
                break;
            }
            other => panic!("PUT on a filling disk answered {other}"),
        }
    }
    let full_at = full_at.expect("the disk never filled up");
    assert!(kept.len() >= 3, "only {} blobs fit", kept.len());
    // Small writes (one put, not multipart) fail the same way.
    let small = random_bytes(300_000, 999);
    let (status, _) = put(&server, &small).await;
    assert!(matches!(status, 507 | 201), "a small PUT answered {status}");
    // Nothing half-written is visible, and what was stored reads back.
    let staged: Vec<_> = files_under(&storage)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains('#'))
        .collect();
    assert!(staged.is_empty(), "unpublished writes left: {staged:?}");
    for blob in &kept {
        assert_eq!(get(&server, blob).await.0, 200);
    }
    assert_eq!(readyz(&server).await, 200);
    // Room is made: writes work again, no restart needed.
    std::fs::remove_file(&ballast).unwrap();
    let after = random_bytes(4 << 20, 12345);
    assert_eq!(put(&server, &after).await.0, 201);
    assert_eq!(get(&server, &after).await.0, 200);
    eprintln!(
        "disk full after {full_at} blobs of 4 MiB: 507, reads intact, writes back once room was made"
    );
}
