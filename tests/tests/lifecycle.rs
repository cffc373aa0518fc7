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
