//! A gRPC client of the server's Remote Execution API cache (tonic and the
//! `bazel-remote-apis` bindings): a server with its gRPC port, a channel,
//! digests, blob contents and ByteStream helpers.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream as bs;
use bs::byte_stream_client::ByteStreamClient;
use futures::StreamExt;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use sha2::Digest as _;
use tonic::transport::Channel;

use crate::process::free_port;
use crate::{Backend, CacheServer, ServerOptions};

/// A server with its gRPC port; `extra` more flags.
pub fn server(extra: &[&str]) -> (CacheServer, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--grpc-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (
        CacheServer::start(Backend::Local, ServerOptions::args(&args)),
        port,
    )
}

pub async fn channel(port: u16) -> Channel {
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gRPC port does not answer");
}

pub fn sha256(data: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: hex(&sha2::Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `size` bytes that compress a little (text-like) but not to nothing.
pub fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 3 == 0 {
                b'a' + (state % 26) as u8
            } else {
                (state >> 8) as u8
            }
        })
        .collect()
}

/// A client stream of `requests` that then stays open until `hold` is
/// dropped (`None`: it half-closes after the last request).
pub fn requests(
    requests: Vec<bs::WriteRequest>,
    hold: Option<tokio::sync::oneshot::Receiver<()>>,
) -> impl futures::Stream<Item = bs::WriteRequest> + Send + 'static {
    let sent = futures::stream::iter(requests);
    let held = futures::stream::once(async move {
        if let Some(hold) = hold {
            let _ = hold.await;
        }
    })
    .filter_map(|()| async { None });
    sent.chain(held)
}

/// The `WriteRequest`s of `data` from `from`, in chunks of `chunk` bytes;
/// the last finishes the write when `finish`.
pub fn write_requests(
    resource: &str,
    data: &[u8],
    from: usize,
    chunk: usize,
    finish: bool,
) -> Vec<bs::WriteRequest> {
    let mut out: Vec<bs::WriteRequest> = data[from..]
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| bs::WriteRequest {
            resource_name: if i == 0 {
                resource.to_owned()
            } else {
                String::new()
            },
            write_offset: (from + i * chunk) as i64,
            finish_write: false,
            data: piece.to_vec(),
        })
        .collect();
    if let Some(last) = out.last_mut() {
        last.finish_write = finish;
    }
    out
}

/// The bytes of the ByteStream read of `resource` from `offset`, at most
/// `limit` (0: all); every message at most 4 MiB.
pub async fn read_all(
    client: &mut ByteStreamClient<Channel>,
    resource: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .read(bs::ReadRequest {
            resource_name: resource.to_owned(),
            read_offset: offset,
            read_limit: limit,
        })
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(message) = stream.message().await? {
        assert!(message.data.len() <= 4 * 1024 * 1024);
        all.extend_from_slice(&message.data);
    }
    Ok(all)
}

/// A `BatchUpdateBlobsRequest` of `blobs` (identity), digests of `digest_function`.
pub fn update(
    blobs: &[(&reapi::Digest, &[u8])],
    digest_function: i32,
) -> reapi::BatchUpdateBlobsRequest {
    reapi::BatchUpdateBlobsRequest {
        requests: blobs
            .iter()
            .map(
                |(digest, data)| reapi::batch_update_blobs_request::Request {
                    digest: Some((*digest).clone()),
                    data: data.to_vec(),
                    compressor: 0,
                },
            )
            .collect(),
        digest_function,
        ..Default::default()
    }
}

/// The hashes of `digests` the CAS lacks.
pub async fn missing(
    cas: &mut ContentAddressableStorageClient<Channel>,
    digests: &[&reapi::Digest],
) -> Vec<String> {
    let response = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: digests.iter().map(|d| (*d).clone()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response
        .missing_blob_digests
        .into_iter()
        .map(|d| d.hash)
        .collect()
}
