//! The Remote Execution API cache over gRPC, driven with a generated
//! client (`bazel-remote-apis` + tonic): capabilities, batches verified
//! against their digests, the action cache's completeness check, the
//! entries shared with the Bazel HTTP protocol and the native CAS, and
//! tokens in gRPC metadata.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream as bs;
use bs::byte_stream_client::ByteStreamClient;
use cachectl_e2e::grpc::{
    channel, content, missing, read_all, requests, server, sha256, update, write_requests,
};
use prost::Message;
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

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

#[tokio::test]
async fn bytestream_reads_and_writes_large_blobs_verified_with_offsets_and_limits() {
    let (server, port) = server(&[]);
    let channel = channel(port).await;
    let mut client = ByteStreamClient::new(channel.clone());
    let mut cas = ContentAddressableStorageClient::new(channel);
    let data = content(10 * 1024 * 1024 + 17, 1);
    let digest = sha256(&data);
    let upload = format!(
        "main/uploads/0b7e5c1a-1/blobs/{}/{}",
        digest.hash, digest.size_bytes
    );
    let written = client
        .write(requests(
            write_requests(&upload, &data, 0, 1024 * 1024, true),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.committed_size, digest.size_bytes);
    let read = format!("main/blobs/{}/{}", digest.hash, digest.size_bytes);
    assert!(read_all(&mut client, &read, 0, 0).await.unwrap() == data);
    let part = read_all(&mut client, &read, 3_000_000, 1_500_000)
        .await
        .unwrap();
    assert!(part == data[3_000_000..4_500_000]);
    let tail = read_all(&mut client, &read, 10 * 1024 * 1024, 0)
        .await
        .unwrap();
    assert!(tail == data[10 * 1024 * 1024..]);
    let past = read_all(&mut client, &read, digest.size_bytes + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");
    let at_end = read_all(&mut client, &read, digest.size_bytes, 0)
        .await
        .unwrap();
    assert!(at_end.is_empty());
    // The empty blob is always there; another hash with size 0 is not.
    let empty = sha256(b"");
    let got = read_all(&mut client, &format!("blobs/{}/0", empty.hash), 0, 0)
        .await
        .unwrap();
    assert!(got.is_empty());
    let absent = read_all(&mut client, &format!("blobs/{}/0", sha256(b"x").hash), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound, "{absent:?}");
    // Stored where the Bazel HTTP protocol finds it.
    let over_http = server
        .client
        .get(server.url(&format!("/cas/{}", digest.hash)))
        .send()
        .await
        .unwrap();
    assert!(over_http.bytes().await.unwrap() == data);

    // Bytes that are not the digest's: refused, nothing stored.
    let mut forged = content(5 * 1024 * 1024, 2);
    let claimed = sha256(&forged);
    forged[4_000_000] ^= 1;
    let resource = format!("uploads/f/blobs/{}/{}", claimed.hash, claimed.size_bytes);
    let refused = client
        .write(requests(
            write_requests(&resource, &forged, 0, 512 * 1024, true),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        missing(&mut cas, &[&claimed]).await,
        [claimed.hash.as_str()]
    );
    // More bytes than the digest's size: refused at once.
    let small = b"twelve bytes".as_slice();
    let sized = reapi::Digest {
        size_bytes: 5,
        ..sha256(small)
    };
    let resource = format!("uploads/g/blobs/{}/5", sized.hash);
    let long = client
        .write(requests(
            write_requests(&resource, small, 0, 64, true),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument, "{long:?}");
    // A read of an absent blob and a malformed resource name.
    let absent = format!("blobs/{}/{}", claimed.hash, claimed.size_bytes);
    let status = read_all(&mut client, &absent, 0, 0).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = read_all(&mut client, "blobs/../../etc/passwd/1", 0, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_interrupted_bytestream_write_is_resumed_from_its_committed_size() {
    let (_server, port) = server(&[]);
    let channel = channel(port).await;
    let mut client = ByteStreamClient::new(channel.clone());
    let mut cas = ContentAddressableStorageClient::new(channel);
    let data = content(8 * 1024 * 1024, 3);
    let digest = sha256(&data);
    let resource = format!(
        "uploads/5d0c6f1e/blobs/{}/{}",
        digest.hash, digest.size_bytes
    );
    let status = |client: &mut ByteStreamClient<Channel>| {
        let request = bs::QueryWriteStatusRequest {
            resource_name: resource.clone(),
        };
        let mut client = client.clone();
        async move { client.query_write_status(request).await }
    };
    assert_eq!(
        status(&mut client).await.unwrap_err().code(),
        Code::NotFound
    );

    // 1. The client closes its stream after 3 MiB without finishing.
    let three = 3 * 1024 * 1024;
    let first = client
        .write(requests(
            write_requests(&resource, &data[..three], 0, 1024 * 1024, false),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.committed_size, three as i64);
    let query = status(&mut client).await.unwrap().into_inner();
    assert_eq!(
        (query.committed_size, query.complete),
        (three as i64, false)
    );
    assert_eq!(missing(&mut cas, &[&digest]).await, [digest.hash.as_str()]);

    // 2. The connection breaks after 2 more MiB: the call is cancelled.
    let five = 5 * 1024 * 1024;
    let (hold, held) = tokio::sync::oneshot::channel();
    let mut broken = ByteStreamClient::new(self::channel(port).await);
    let stream = requests(
        write_requests(&resource, &data[..five], three, 1024 * 1024, false),
        Some(held),
    );
    let call = tokio::spawn(async move { broken.write(stream).await });
    let mut committed = 0;
    for _ in 0..200 {
        committed = status(&mut client)
            .await
            .unwrap()
            .into_inner()
            .committed_size;
        if committed == five as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(committed, five as i64);
    call.abort();
    drop(hold);
    // A resume that does not start where the upload stands is refused and
    // loses nothing.
    let wrong = client
        .write(requests(
            write_requests(&resource, &data, three, 1024 * 1024, true),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong.code(),
            Code::FailedPrecondition | Code::InvalidArgument | Code::Aborted
        ),
        "{wrong:?}"
    );
    let mut query = status(&mut client).await.unwrap().into_inner();
    for _ in 0..100 {
        if query.committed_size == five as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        query = status(&mut client).await.unwrap().into_inner();
    }
    assert_eq!((query.committed_size, query.complete), (five as i64, false));

    // 3. The rest, from the committed size: the blob is complete.
    let done = client
        .write(requests(
            write_requests(&resource, &data, five, 1024 * 1024, true),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.committed_size, digest.size_bytes);
    let query = status(&mut client).await.unwrap().into_inner();
    assert_eq!(
        (query.committed_size, query.complete),
        (digest.size_bytes, true)
    );
    let read = format!("blobs/{}/{}", digest.hash, digest.size_bytes);
    assert!(read_all(&mut client, &read, 0, 0).await.unwrap() == data);
}

#[tokio::test]
async fn bytestream_speaks_zstd_both_ways_and_verifies_the_decompressed_bytes() {
    let (server, port) = server(&[]);
    let channel = channel(port).await;
    let mut client = ByteStreamClient::new(channel.clone());
    let mut cas = ContentAddressableStorageClient::new(channel);
    let data = content(6 * 1024 * 1024 + 3, 4);
    let digest = sha256(&data);
    let frames = zstd::encode_all(data.as_slice(), 3).unwrap();
    assert!(frames.len() < data.len());
    let resource = format!(
        "uploads/z1/compressed-blobs/zstd/{}/{}",
        digest.hash, digest.size_bytes
    );
    let written = client
        .write(requests(
            write_requests(&resource, &frames, 0, 256 * 1024, true),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.committed_size, frames.len() as i64);
    let plain = format!("blobs/{}/{}", digest.hash, digest.size_bytes);
    assert!(read_all(&mut client, &plain, 0, 0).await.unwrap() == data);
    let compressed = format!(
        "compressed-blobs/zstd/{}/{}",
        digest.hash, digest.size_bytes
    );
    let got = read_all(&mut client, &compressed, 0, 0).await.unwrap();
    assert!(got.len() < data.len());
    assert!(zstd::decode_all(got.as_slice()).unwrap() == data);

    // A blob stored small and plain over HTTP is compressed on the way out.
    let small = content(40_000, 5);
    let dsmall = sha256(&small);
    server
        .client
        .put(server.url(&format!("/cas/{}", dsmall.hash)))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    let got = read_all(
        &mut client,
        &format!(
            "compressed-blobs/zstd/{}/{}",
            dsmall.hash, dsmall.size_bytes
        ),
        0,
        0,
    )
    .await
    .unwrap();
    assert!(zstd::decode_all(got.as_slice()).unwrap() == small);

    // Frames of other bytes than the digest's: refused, nothing stored.
    let other = content(1024 * 1024, 6);
    let claimed = sha256(&content(1024 * 1024, 7));
    let resource = format!(
        "uploads/z2/compressed-blobs/zstd/{}/{}",
        claimed.hash, claimed.size_bytes
    );
    let refused = client
        .write(requests(
            write_requests(
                &resource,
                &zstd::encode_all(other.as_slice(), 1).unwrap(),
                0,
                64 * 1024,
                true,
            ),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        missing(&mut cas, &[&claimed]).await,
        [claimed.hash.as_str()]
    );
    // Not zstd at all.
    let resource = format!(
        "uploads/z3/compressed-blobs/zstd/{}/{}",
        claimed.hash, claimed.size_bytes
    );
    let garbage = client
        .write(requests(
            write_requests(&resource, b"not a zstd frame", 0, 64, true),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    // zstd in a batch, too.
    let batch_blob = content(100_000, 8);
    let dbatch = sha256(&batch_blob);
    let response = cas
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(dbatch.clone()),
                data: zstd::encode_all(batch_blob.as_slice(), 3).unwrap(),
                compressor: reapi::compressor::Value::Zstd as i32,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.responses[0].status.as_ref().unwrap().code, 0);
    assert!(
        read_all(
            &mut client,
            &format!("blobs/{}/{}", dbatch.hash, dbatch.size_bytes),
            0,
            0
        )
        .await
        .unwrap()
            == batch_blob
    );
}

/// A channel to `port` over TLS, trusting `cert` (PEM) and offering ALPN
/// `h2` as gRPC clients do.
async fn tls_channel(
    port: u16,
    cert: &std::path::Path,
) -> Result<Channel, tonic::transport::Error> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

#[tokio::test]
async fn with_tls_cert_the_grpc_port_speaks_tls_and_not_h2c() {
    let folder = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        folder.path().join("cert.pem"),
        folder.path().join("key.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (cert_text, key_text) = (cert.display().to_string(), key.display().to_string());
    let (_server, port) = server(&["--tls-cert", &cert_text, "--tls-key", &key_text]);
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(connected) = tls_channel(port, &cert).await {
            channel = Some(connected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let channel = channel.expect("a TLS connection to the gRPC port");
    let data = content(2 * 1024 * 1024, 9);
    let digest = sha256(&data);
    let mut client = ByteStreamClient::new(channel.clone());
    let resource = format!("uploads/t/blobs/{}/{}", digest.hash, digest.size_bytes);
    client
        .write(requests(
            write_requests(&resource, &data, 0, 512 * 1024, true),
            None,
        ))
        .await
        .unwrap();
    let read = format!("blobs/{}/{}", digest.hash, digest.size_bytes);
    assert!(read_all(&mut client, &read, 0, 0).await.unwrap() == data);
    // A client that does not speak TLS gets no service, and the port goes
    // on serving TLS clients.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let refused = CapabilitiesClient::new(plain)
            .get_capabilities(reapi::GetCapabilitiesRequest::default())
            .await;
        assert!(refused.is_err());
    }
    let capabilities = CapabilitiesClient::new(channel)
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(capabilities.cache_capabilities.is_some());
}

#[tokio::test]
async fn a_write_past_its_deadline_ends_and_can_be_resumed() {
    let (_server, port) = server(&[]);
    let channel = channel(port).await;
    let mut client = ByteStreamClient::new(channel);
    let data = content(3 * 1024 * 1024, 13);
    let digest = sha256(&data);
    let resource = format!("uploads/d/blobs/{}/{}", digest.hash, digest.size_bytes);
    let one = 1024 * 1024;
    // 1 MiB, then the client stalls with its stream open.
    let (_hold, held) = tokio::sync::oneshot::channel::<()>();
    let mut request = tonic::Request::new(requests(
        write_requests(&resource, &data[..one], 0, one, false),
        Some(held),
    ));
    request.set_timeout(std::time::Duration::from_millis(700));
    let started = std::time::Instant::now();
    let ended = client.write(request).await.unwrap_err();
    assert!(
        matches!(ended.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{ended:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The server let go of it: it is resumable, not busy.
    let mut committed = -1;
    for _ in 0..100 {
        let query = client
            .query_write_status(bs::QueryWriteStatusRequest {
                resource_name: resource.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        committed = query.committed_size;
        if committed == one as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(committed, one as i64);
    let done = client
        .write(requests(
            write_requests(&resource, &data, one, one, true),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.committed_size, digest.size_bytes);
}

#[tokio::test]
async fn get_tree_pages_a_directory_tree_and_an_output_tree_must_be_whole() {
    let (_server, port) = server(&[]);
    let channel = channel(port).await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut ac = ActionCacheClient::new(channel);
    // root/{a.txt, sub/{b.txt, leaf/}} and a second child sharing `leaf`.
    let (a, b) = (b"file a".as_slice(), b"file b".as_slice());
    let (da, db) = (sha256(a), sha256(b));
    let leaf = reapi::Directory::default().encode_to_vec();
    let dleaf = sha256(&leaf);
    let node = |name: &str, digest: &reapi::Digest| reapi::DirectoryNode {
        name: name.into(),
        digest: Some(digest.clone()),
    };
    let file = |name: &str, digest: &reapi::Digest| reapi::FileNode {
        name: name.into(),
        digest: Some(digest.clone()),
        ..Default::default()
    };
    let sub = reapi::Directory {
        files: vec![file("b.txt", &db)],
        directories: vec![node("leaf", &dleaf)],
        ..Default::default()
    };
    let sub_bytes = sub.encode_to_vec();
    let dsub = sha256(&sub_bytes);
    let other = reapi::Directory {
        directories: vec![node("leaf", &dleaf)],
        ..Default::default()
    };
    let other_bytes = other.encode_to_vec();
    let dother = sha256(&other_bytes);
    let root = reapi::Directory {
        files: vec![file("a.txt", &da)],
        directories: vec![node("other", &dother), node("sub", &dsub)],
        ..Default::default()
    };
    let root_bytes = root.encode_to_vec();
    let droot = sha256(&root_bytes);
    cas.batch_update_blobs(update(
        &[
            (&droot, &root_bytes),
            (&dsub, &sub_bytes),
            (&dother, &other_bytes),
            (&dleaf, &leaf),
        ],
        0,
    ))
    .await
    .unwrap();
    let tree = |page_size: i32, page_token: String| reapi::GetTreeRequest {
        root_digest: Some(droot.clone()),
        page_size,
        page_token,
        ..Default::default()
    };
    let pages = cas.clone();
    let page = |request: reapi::GetTreeRequest| {
        let mut cas = pages.clone();
        async move {
            let mut stream = cas.get_tree(request).await.unwrap().into_inner();
            let mut all = Vec::new();
            while let Some(page) = stream.message().await.unwrap() {
                all.push(page);
            }
            all
        }
    };
    let whole = page(tree(0, String::new())).await;
    let directories: Vec<_> = whole.iter().flat_map(|p| p.directories.clone()).collect();
    // Breadth first, each directory once (the shared leaf too).
    assert_eq!(
        directories,
        [
            root.clone(),
            other.clone(),
            sub.clone(),
            reapi::Directory::default()
        ]
    );
    assert!(whole.last().unwrap().next_page_token.is_empty());
    // Two at a time: the pages join up to the same list.
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let pages = page(tree(2, token.clone())).await;
        let last = pages.last().unwrap().clone();
        paged.extend(pages.into_iter().flat_map(|p| p.directories));
        token = last.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, directories);

    // An action whose output directory is that tree: NOT_FOUND until every
    // file in it is in the CAS.
    let tree_message = reapi::Tree {
        root: Some(root.clone()),
        children: vec![other.clone(), sub.clone(), reapi::Directory::default()],
    };
    let tree_bytes = tree_message.encode_to_vec();
    let dtree = sha256(&tree_bytes);
    cas.batch_update_blobs(update(&[(&dtree, &tree_bytes), (&da, a)], 0))
        .await
        .unwrap();
    let action = sha256(b"an action with an output directory");
    ac.update_action_result(reapi::UpdateActionResultRequest {
        action_digest: Some(action.clone()),
        action_result: Some(reapi::ActionResult {
            output_directories: vec![reapi::OutputDirectory {
                path: "out".into(),
                tree_digest: Some(dtree.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let get = || reapi::GetActionResultRequest {
        action_digest: Some(action.clone()),
        ..Default::default()
    };
    let partial = ac.get_action_result(get()).await.unwrap_err();
    assert_eq!(partial.code(), Code::NotFound, "b.txt is missing");
    cas.batch_update_blobs(update(&[(&db, b)], 0))
        .await
        .unwrap();
    ac.get_action_result(get()).await.unwrap();
}

/// A failure on the server's side reaches a gRPC client as `INTERNAL` with
/// a generic message, and the server's log with its detail: the same as
/// over HTTP, so an operator can find what broke and a client learns
/// nothing of the server's insides.
#[tokio::test]
async fn an_internal_error_is_logged_with_its_detail_and_the_client_sees_a_generic_message() {
    let (server, port) = server(&[]);
    let mut client = ByteStreamClient::new(channel(port).await);
    // Compressible, so it is stored as zstd frames with a seek table.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| b"cache"[(i % 5) as usize])
        .collect();
    let digest = cache_proto::Digest::of(&data);
    let size = data.len();
    let upload = format!("uploads/u-1/blobs/blake3/{digest}/{size}");
    client
        .write(requests(
            write_requests(&upload, &data, 0, 1024 * 1024, true),
            None,
        ))
        .await
        .unwrap();
    let read = format!("blobs/blake3/{digest}/{size}");
    assert!(read_all(&mut client, &read, 100, 10).await.unwrap() == data[100..110]);

    // The stored object's seek table is damaged behind the server's back.
    let stored = server.stored_blob_file(&digest);
    let mut bytes = std::fs::read(&stored).unwrap();
    let length = bytes.len();
    bytes[length - 16..].fill(0);
    std::fs::write(&stored, bytes).unwrap();

    let failed = read_all(&mut client, &read, 100, 10).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert_eq!(failed.message(), "internal error");
    // The server logs before it answers, but its output reaches the test
    // through a pipe: the line is waited for (up to the harness's 5 s).
    let logged = |logs: &str| {
        logs.lines()
            .find(|line| line.contains("internal error"))
            .map(str::to_owned)
    };
    let logs = server.logs_once(|logs| logged(logs).is_some()).await;
    let line = logged(&logs).unwrap_or_else(|| panic!("no internal error in the log:\n{logs}"));
    assert!(line.contains("seek table"), "{line}");
}
