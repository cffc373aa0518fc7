//! `server-bench`: verified upload and download throughput of a real
//! `cache-server` (release build, local-folder storage) and its peak memory
//! while a large blob goes up and comes back down.
//!
//! The reference, measured in the same run on the same disk: writing the same
//! bytes to a file (what a cache that neither hashes nor compresses would
//! cost at least), and reading them back. Results go to stdout as JSON and to
//! stderr as a table.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin server-bench -- [SIZE_MIB]
//! ```

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use cache_proto::Digest;
use cachectl_e2e::CacheServer;
use cachectl_e2e::data::{compressible_bytes, random_bytes};
use futures::StreamExt;
use serde_json::json;

const CHUNK: usize = 1024 * 1024;

/// The kind of content.
#[derive(Clone, Copy)]
enum Content {
    /// Incompressible: stored raw.
    Random,
    /// Text-like: stored as zstd frames.
    Text,
}

impl Content {
    fn name(self) -> &'static str {
        match self {
            Self::Random => "incompressible",
            Self::Text => "compressible",
        }
    }

    /// Chunk `i` of the content: the same bytes every time it is asked for.
    fn chunk(self, i: usize) -> Vec<u8> {
        match self {
            Self::Random => random_bytes(CHUNK, i as u64 + 1),
            Self::Text => {
                let mut text = compressible_bytes(CHUNK);
                text[..8].copy_from_slice(&(i as u64).to_le_bytes());
                text
            }
        }
    }
}

fn digest_of(content: Content, chunks: usize) -> Digest {
    let mut hasher = blake3::Hasher::new();
    for i in 0..chunks {
        hasher.update(&content.chunk(i));
    }
    Digest::from(hasher.finalize())
}

/// Peak resident set size of the server, in bytes.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    cachectl_e2e::process::peak_rss(pid).context("the server is gone")
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

/// Writes then reads the same bytes through a plain file: the reference.
fn disk_reference(content: Content, chunks: usize) -> anyhow::Result<(f64, f64)> {
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("reference.bin");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for i in 0..chunks {
        file.write_all(&content.chunk(i))?;
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut read = std::fs::File::open(&path)?;
    let mut sink = std::io::sink();
    std::io::copy(&mut read, &mut sink)?;
    Ok((write_seconds, started.elapsed().as_secs_f64()))
}

async fn run_one(
    server: &mut CacheServer,
    content: Content,
    chunks: usize,
) -> anyhow::Result<serde_json::Value> {
    let bytes = (chunks * CHUNK) as u64;
    let digest = digest_of(content, chunks);
    let url = server.url(&cache_proto::routes::cas(&digest));
    let pid = server.service().context("server running")?.pid();
    let rss_before = peak_rss(pid)?;

    let body = futures::stream::iter(0..chunks)
        .map(move |i| Ok::<_, std::io::Error>(Bytes::from(content.chunk(i))));
    let started = Instant::now();
    let response = server
        .client
        .put(&url)
        .header(reqwest::header::CONTENT_LENGTH, bytes)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let upload_seconds = started.elapsed().as_secs_f64();
    if !response.status().is_success() {
        bail!(
            "upload failed: {} {}",
            response.status(),
            response.text().await?
        );
    }
    let rss_upload = peak_rss(pid)?;

    let started = Instant::now();
    let response = server.client.get(&url).send().await?;
    let mut stream = response.bytes_stream();
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let download_seconds = started.elapsed().as_secs_f64();
    if received != bytes || Digest::from(hasher.finalize()) != digest {
        bail!("download of {} came back different", content.name());
    }
    let rss_download = peak_rss(pid)?;
    let (reference_write, reference_read) = disk_reference(content, chunks)?;

    Ok(json!({
        "content": content.name(),
        "bytes": bytes,
        "upload_mib_s": mib_per_s(bytes, upload_seconds),
        "download_mib_s": mib_per_s(bytes, download_seconds),
        "reference_file_write_mib_s": mib_per_s(bytes, reference_write),
        "reference_file_read_mib_s": mib_per_s(bytes, reference_read),
        "upload_vs_file_write": reference_write / upload_seconds,
        "download_vs_file_read": reference_read / download_seconds,
        "server_peak_rss_mib_before": rss_before as f64 / 1048576.0,
        "server_peak_rss_mib_after_upload": rss_upload as f64 / 1048576.0,
        "server_peak_rss_mib_after_download": rss_download as f64 / 1048576.0,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let size_mib: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("SIZE_MIB must be a whole number")?,
        None => 1024,
    };
    let mut server = CacheServer::local();
    let mut results = Vec::new();
    for content in [Content::Random, Content::Text] {
        let result = run_one(&mut server, content, size_mib).await?;
        eprintln!(
            "{:>15}: {} MiB  upload {:7.1} MiB/s ({:.2}x file write)  download {:7.1} MiB/s ({:.2}x file read)  server peak RSS {:.1} MiB",
            content.name(),
            size_mib,
            result["upload_mib_s"].as_f64().unwrap_or(0.0),
            result["upload_vs_file_write"].as_f64().unwrap_or(0.0),
            result["download_mib_s"].as_f64().unwrap_or(0.0),
            result["download_vs_file_read"].as_f64().unwrap_or(0.0),
            result["server_peak_rss_mib_after_download"]
                .as_f64()
                .unwrap_or(0.0),
        );
        results.push(result);
    }
    let machine = cachectl_e2e::machine::facts("the server and the client share the cores");
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "machine": machine, "results": results }))?
    );
    Ok(())
}
