//! The Remote Execution API cache over gRPC, driven with a generated
//! client (`bazel-remote-apis` + tonic): capabilities, batches verified
//! against their digests, the action cache's completeness check, the
//! entries shared with the Bazel HTTP protocol and the native CAS, and
//! tokens in gRPC metadata.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use cachectl_e2e::process::free_port;
use cachectl_e2e::{Backend, CacheServer, ServerOptions};
use prost::Message;
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use sha2::Digest as _;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A server with its gRPC port; `extra` more flags.
fn server(extra: &[&str]) -> (CacheServer, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--grpc-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (
        CacheServer::start(Backend::Local, ServerOptions::args(&args)),
        port,
    )
}

async fn channel(port: u16) -> Channel {
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gRPC port does not answer");
}

fn sha256(data: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: hex(&sha2::Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `message` with `token` as its bearer token, if any.
fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn update(
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

async fn missing(
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

#[tokio::test]
async fn batches_are_verified_shared_with_bazel_http_and_sized_as_advertised() {
    let (server, port) = server(&[]);
    let channel = channel(port).await;
    let capabilities = CapabilitiesClient::new(channel.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cache = capabilities.cache_capabilities.unwrap();
    use reapi::digest_function::Value;
    assert_eq!(
        cache.digest_functions,
        [Value::Sha256 as i32, Value::Blake3 as i32]
    );
    assert!(
        cache
            .action_cache_update_capabilities
            .unwrap()
            .update_enabled
    );
    let max_batch = cache.max_batch_total_size_bytes as usize;
    assert!(max_batch >= 1024 * 1024);

    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let (a, b) = (b"first blob".as_slice(), b"second blob".as_slice());
    let (da, db) = (sha256(a), sha256(b));
    assert_eq!(
        missing(&mut cas, &[&da, &db]).await,
        [da.hash.clone(), db.hash.clone()]
    );
    // One right, one whose bytes are not its digest's.
    let response = cas
        .batch_update_blobs(update(&[(&da, a), (&db, b"tampered!!!")], 0))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = response
        .responses
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(codes, [Code::Ok as i32, Code::InvalidArgument as i32]);
    // The tampered one was not stored.
    assert_eq!(missing(&mut cas, &[&da, &db]).await, [db.hash.as_str()]);
    let read = cas
        .batch_read_blobs(reapi::BatchReadBlobsRequest {
            digests: vec![da.clone(), db.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.responses[0].data, a);
    assert_eq!(
        read.responses[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );

    // Shared with Bazel's HTTP protocol: written there, read here, and back.
    let c = b"written over HTTP".as_slice();
    let dc = sha256(c);
    let put = server
        .client
        .put(server.url(&format!("/cas/{}", dc.hash)))
        .body(c.to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert!(missing(&mut cas, &[&dc]).await.is_empty());
    let got = server
        .client
        .get(server.url(&format!("/cas/{}", da.hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), a);

    // BLAKE3 digests are the native CAS's.
    let native = b"a native blob".as_slice();
    let d3 = reapi::Digest {
        hash: blake3::hash(native).to_hex().to_string(),
        size_bytes: native.len() as i64,
    };
    let response = cas
        .batch_update_blobs(update(&[(&d3, native)], Value::Blake3 as i32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.responses[0].status.as_ref().unwrap().code, 0);
    let got = server
        .client
        .get(server.url(&format!("/v1/cas/{}", d3.hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), native);

    // A batch above the advertised size is refused whole.
    let big = vec![7u8; max_batch + 1];
    let refused = cas
        .batch_update_blobs(update(&[(&sha256(&big), &big)], 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{refused:?}"
    );
    // A malformed digest is INVALID_ARGUMENT.
    let bad = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: vec![reapi::Digest {
                hash: "../etc".into(),
                size_bytes: 1,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_action_result_whose_outputs_are_gone_is_not_found_and_inline_outputs_are_sent() {
    let (server, port) = server(&[]);
    let channel = channel(port).await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut ac = ActionCacheClient::new(channel);
    let output = b"the compiled output".as_slice();
    let stdout = b"compiler says hi".as_slice();
    let (doutput, dstdout) = (sha256(output), sha256(stdout));
    let action = sha256(b"the action");
    let result = reapi::ActionResult {
        output_files: vec![reapi::OutputFile {
            path: "bazel-out/app.o".into(),
            digest: Some(doutput.clone()),
            ..Default::default()
        }],
        stdout_digest: Some(dstdout.clone()),
        exit_code: 0,
        ..Default::default()
    };
    ac.update_action_result(reapi::UpdateActionResultRequest {
        action_digest: Some(action.clone()),
        action_result: Some(result.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let get = || reapi::GetActionResultRequest {
        action_digest: Some(action.clone()),
        inline_stdout: true,
        inline_output_files: vec!["bazel-out/app.o".into()],
        ..Default::default()
    };
    // Its outputs are not in the CAS: a hit would break the build.
    let incomplete = ac.get_action_result(get()).await.unwrap_err();
    assert_eq!(incomplete.code(), Code::NotFound, "{incomplete:?}");
    cas.batch_update_blobs(update(&[(&doutput, output), (&dstdout, stdout)], 0))
        .await
        .unwrap();
    let hit = ac.get_action_result(get()).await.unwrap().into_inner();
    assert_eq!(hit.stdout_raw, stdout);
    assert_eq!(hit.output_files[0].contents, output);
    // The same entry is Bazel's HTTP action cache entry.
    let over_http = server
        .client
        .get(server.url(&format!("/ac/{}", action.hash)))
        .send()
        .await
        .unwrap();
    let stored = reapi::ActionResult::decode(over_http.bytes().await.unwrap()).unwrap();
    assert_eq!(stored, result);
    // An unknown action is NOT_FOUND.
    let unknown = ac
        .get_action_result(reapi::GetActionResultRequest {
            action_digest: Some(sha256(b"never run")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn tokens_travel_in_metadata_with_their_scopes() {
    let (server, port) = server(&["--auth", "required"]);
    let read = server.create_token("read", "reader", &[]);
    let write = server.create_token("write", "ci", &[]);
    let channel = channel(port).await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let data = b"scoped".as_slice();
    let digest = sha256(data);
    let anonymous = cas
        .batch_update_blobs(with_token(update(&[(&digest, data)], 0), None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let wrong = cas
        .find_missing_blobs(with_token(
            reapi::FindMissingBlobsRequest::default(),
            Some("cct_nope"),
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let reader = cas
        .batch_update_blobs(with_token(update(&[(&digest, data)], 0), Some(&read)))
        .await
        .unwrap_err();
    assert_eq!(reader.code(), Code::PermissionDenied, "{reader:?}");
    let capabilities = CapabilitiesClient::new(channel.clone())
        .get_capabilities(with_token(
            reapi::GetCapabilitiesRequest::default(),
            Some(&read),
        ))
        .await
        .unwrap()
        .into_inner();
    let update_enabled = capabilities
        .cache_capabilities
        .unwrap()
        .action_cache_update_capabilities
        .unwrap()
        .update_enabled;
    assert!(
        !update_enabled,
        "a read token may not update the action cache"
    );
    cas.batch_update_blobs(with_token(update(&[(&digest, data)], 0), Some(&write)))
        .await
        .unwrap();
    let found = cas
        .find_missing_blobs(with_token(
            reapi::FindMissingBlobsRequest {
                blob_digests: vec![digest.clone()],
                ..Default::default()
            },
            Some(&read),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(found.missing_blob_digests.is_empty());
    // The token never reaches the log.
    assert!(!server.logs().contains(&write) && !server.logs().contains(&read));
}
