//! The cache server's CAS as a folder cache sees it: which digests it
//! lacks, uploads (zstd when it pays, streamed from the file when large),
//! and verified downloads into the local content store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cache_proto::body::{MissingRequest, MissingResponse};
use cache_proto::{Digest, batch};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::records::RecordStore;
use super::{CacheClient, ClientError};
use crate::folder::restore::ContentStore;

/// Digests asked about per `missing` request (the server takes 4 MiB).
const MISSING_CHUNK: usize = 10_000;
/// Files up to this size are read, compressed and sent from memory.
const IN_MEMORY: u64 = 8 * 1024 * 1024;
/// zstd level of uploads: the fastest, as the compression only saves wire
/// bytes (the server stores at its own level, `--zstd-level`); measured by
/// `folder-bench`, level 3 made a first save of 106 MiB 15 % slower for 1 %
/// fewer bytes.
const WIRE_LEVEL: i32 = 1;
/// Bound of one blob transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(900);

/// A cache server's CAS.
#[derive(Debug, Clone)]
pub struct Cas {
    client: CacheClient,
}

impl Cas {
    /// The CAS of the server `client` talks to.
    pub fn new(client: CacheClient) -> Self {
        Self { client }
    }

    /// The CAS of the server `records` live on; `None` for local records.
    pub fn of(records: &RecordStore) -> Option<Self> {
        records.client().cloned().map(Self::new)
    }

    fn blob(&self, method: reqwest::Method, digest: &Digest) -> reqwest::RequestBuilder {
        self.client
            .request(method, &cache_proto::routes::cas(digest))
    }

    /// The digests of `wanted` the server lacks, in order.
    pub async fn missing(&self, wanted: &[Digest]) -> Result<Vec<Digest>, ClientError> {
        let mut missing = Vec::new();
        for chunk in wanted.chunks(MISSING_CHUNK) {
            let request = self
                .client
                .request(reqwest::Method::POST, cache_proto::routes::CAS_MISSING)
                .json(&MissingRequest {
                    digests: chunk.to_vec(),
                });
            let response = self.client.send_ok(request, "missing").await?;
            let answer: MissingResponse = response
                .json()
                .await
                .map_err(|e| self.client.unreachable(e.without_url()))?;
            missing.extend(answer.missing);
        }
        Ok(missing)
    }

    /// Uploads the file at `path` as `digest`; returns the bytes sent.
    pub async fn upload(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<u64, ClientError> {
        let local = |e: std::io::Error| ClientError::Local {
            path: path.display().to_string(),
            source: e,
        };
        let request = self
            .blob(reqwest::Method::PUT, digest)
            .timeout(TRANSFER_TIMEOUT);
        let (request, sent) = if size <= IN_MEMORY {
            let content = tokio::fs::read(path).await.map_err(local)?;
            self.in_memory(request, content).await?
        } else {
            let file = tokio::fs::File::open(path).await.map_err(local)?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
            (
                request
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(reqwest::Body::wrap_stream(stream)),
                size,
            )
        };
        self.client
            .send_ok(request, &format!("upload of {digest}"))
            .await?;
        Ok(sent)
    }

    /// Uploads `content` as `digest` (which the caller computed from it);
    /// returns the bytes sent.
    pub async fn upload_bytes(
        &self,
        digest: &Digest,
        content: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let request = self
            .blob(reqwest::Method::PUT, digest)
            .timeout(TRANSFER_TIMEOUT);
        let (request, sent) = self.in_memory(request, content).await?;
        self.client
            .send_ok(request, &format!("upload of {digest}"))
            .await?;
        Ok(sent)
    }

    /// `request` with `content` as its body, zstd-compressed when that
    /// saves a tenth or more; and the bytes it sends.
    async fn in_memory(
        &self,
        request: reqwest::RequestBuilder,
        content: Vec<u8>,
    ) -> Result<(reqwest::RequestBuilder, u64), ClientError> {
        let compressed = tokio::task::spawn_blocking(move || {
            let packed = compress_in_frames(&content).ok();
            (content, packed)
        })
        .await
        .map_err(|e| self.client.unreachable(e))?;
        Ok(match compressed {
            (content, Some(packed)) if packed.len() * 10 < content.len() * 9 => {
                let sent = packed.len() as u64;
                (
                    request.header("content-encoding", "zstd").body(packed),
                    sent,
                )
            }
            (content, _) => {
                let sent = content.len() as u64;
                (request.body(content), sent)
            }
        })
    }

    /// The bytes `range` of blob `digest` of `size` bytes (all of it when
    /// `None`), NOT checked against the digest: the caller checks the
    /// contents it takes from them. `None` when the server lacks the blob;
    /// an answer of another length is an error.
    pub async fn fetch(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<(Vec<u8>, u64)>, ClientError> {
        let mut request = self
            .blob(reqwest::Method::GET, digest)
            .timeout(TRANSFER_TIMEOUT);
        let expected = match &range {
            Some(range) if range.is_empty() => return Ok(Some((Vec::new(), 0))),
            Some(range) => {
                request = request.header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", range.start, range.end - 1),
                );
                range.end - range.start
            }
            _ => {
                request = request.header("accept-encoding", "zstd");
                size
            }
        };
        let what = format!("download of {digest}");
        let Some(response) = self.client.send(request, &what, true).await? else {
            return Ok(None);
        };
        let (bytes, received) = self.body(response, expected, &what).await?;
        if bytes.len() as u64 != expected {
            return Err(self.client.unreachable(format!(
                "{what}: {} bytes came back, not {expected}",
                bytes.len()
            )));
        }
        Ok(Some((bytes, received)))
    }

    /// Downloads `digest` into `store`, verified; returns the bytes
    /// received, or `None` when the server does not have it.
    pub async fn download(
        &self,
        digest: &Digest,
        store: &ContentStore,
    ) -> Result<Option<u64>, ClientError> {
        self.download_to(digest, &store.path(digest)).await
    }

    /// Downloads `digest` into the file `target` (replaced atomically, and
    /// only once the content is verified); returns the bytes received, or
    /// `None` when the server does not have it.
    pub async fn download_to(
        &self,
        digest: &Digest,
        target: &Path,
    ) -> Result<Option<u64>, ClientError> {
        let request = self
            .blob(reqwest::Method::GET, digest)
            .header("accept-encoding", "zstd")
            .timeout(TRANSFER_TIMEOUT);
        let what = format!("download of {digest}");
        let Some(response) = self.client.send(request, &what, true).await? else {
            return Ok(None);
        };
        let compressed = is_zstd(&response);
        let folder = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let local = |e: std::io::Error| ClientError::Local {
            path: target.display().to_string(),
            source: e,
        };
        tokio::fs::create_dir_all(&folder).await.map_err(local)?;
        let staged = tempfile::NamedTempFile::new_in(&folder).map_err(local)?;
        let (file, staged_path) = staged.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.client.unreachable(e.without_url()))?;
            received += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        // Decompress (if needed) and verify off the async threads.
        let expected = *digest;
        let path = staged_path.to_path_buf();
        let verified = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let mut hasher = blake3::Hasher::new();
            let file = std::fs::File::open(&path)?;
            if compressed {
                let plain = zstd::stream::read::Decoder::new(file)?;
                let decoded = path.with_extension("plain");
                let mut out = std::fs::File::create(&decoded)?;
                let mut tee = TeeHasher {
                    inner: plain,
                    hasher: &mut hasher,
                };
                std::io::copy(&mut tee, &mut out)?;
                std::fs::rename(&decoded, &path)?;
            } else {
                hasher.update_reader(file)?;
            }
            Ok(Digest::from(hasher.finalize()) == expected)
        })
        .await
        .map_err(|e| local(std::io::Error::other(e)))?
        .map_err(local)?;
        if !verified {
            return Err(self
                .client
                .unreachable(format!("blob {digest} came back with other content")));
        }
        staged_path.persist(target).map_err(|e| local(e.error))?;
        Ok(Some(received))
    }

    /// Downloads small blobs in one batch request; returns those that came
    /// back with the right content (a record with other content is dropped,
    /// to be fetched again alone) and the bytes on the wire.
    pub async fn download_batch(
        &self,
        digests: &[Digest],
    ) -> Result<(Vec<(Digest, Vec<u8>)>, u64), ClientError> {
        let request = self
            .client
            .request(reqwest::Method::POST, cache_proto::routes::CAS_BATCH_GET)
            .header("accept-encoding", "zstd")
            .json(&MissingRequest {
                digests: digests.to_vec(),
            })
            .timeout(TRANSFER_TIMEOUT);
        let what = "batch download";
        let response = self.client.send_ok(request, what).await?;
        let (plain, received) = self.body(response, batch::MAX_BODY, what).await?;
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<(Digest, Vec<u8>)>, ClientError> {
            let records = batch::parse(&plain).map_err(|e| client.unreachable(e))?;
            Ok(records
                .into_iter()
                .filter(|(digest, content)| Digest::of(content) == *digest)
                .map(|(digest, content)| (digest, content.to_vec()))
                .collect())
        })
        .await
        .map_err(|e| self.client.unreachable(e))?
        .map(|records| (records, received))
    }
}

impl Cas {
    /// The body of `response`, decompressed (off the async threads) when
    /// zstd, at most `limit` + 1 plain bytes; and the bytes on the wire.
    async fn body(
        &self,
        response: reqwest::Response,
        limit: u64,
        what: &str,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        let compressed = is_zstd(&response);
        let wire = response
            .bytes()
            .await
            .map_err(|e| self.client.unreachable(e.without_url()))?;
        let received = wire.len() as u64;
        if !compressed {
            return Ok((wire.to_vec(), received));
        }
        let plain = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let decoder = zstd::stream::read::Decoder::new(&wire[..])?;
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(decoder, limit + 1), &mut plain)?;
            Ok(plain)
        })
        .await
        .map_err(|e| self.client.unreachable(e))?
        .map_err(|e| self.client.unreachable(format!("{what}: {e}")))?;
        Ok((plain, received))
    }
}

/// `content` as independent zstd frames of the server's stored frame size,
/// which the server stores as they are instead of compressing again.
fn compress_in_frames(content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(WIRE_LEVEL)?;
    let mut out = Vec::with_capacity(content.len() / 2 + 64);
    for chunk in content.chunks(cache_proto::headers::ZSTD_FRAME_BYTES) {
        out.extend_from_slice(&compressor.compress(chunk)?);
    }
    Ok(out)
}

/// Whether the response body is zstd-encoded.
fn is_zstd(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"))
}

/// Hashes what it reads.
struct TeeHasher<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: std::io::Read> std::io::Read for TeeHasher<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}
