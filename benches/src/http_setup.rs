//! What `http-bench` and `http-cost` serve: the same 4 KiB blobs and one
//! 1 GiB blob, on cache-server and as files for nginx.

use std::io::Write as _;
use std::path::Path;

use anyhow::bail;
use cachectl_e2e::data::{digest, random_bytes};
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};

/// Small blobs served.
pub const SMALL_BLOBS: usize = 1000;
/// Bytes of each small blob.
pub const SMALL_SIZE: usize = 4096;
/// MiB of the large blob.
pub const LARGE_MIB: usize = 1024;

/// Uploads the small blobs to `server` (as `token`); their paths.
pub async fn upload_small(
    server: &CacheServer,
    token: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for i in 0..SMALL_BLOBS {
        let blob = random_bytes(SMALL_SIZE, i as u64 + 1);
        let path = format!("/v1/cas/{}", digest(&blob));
        let mut request = server.client.put(server.url(&path)).body(blob);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("upload failed: {}", response.status());
        }
        paths.push(path);
    }
    Ok(paths)
}

/// A server requiring tokens (the workspace's, or `binary`), with the
/// small blobs uploaded; its read token and their paths.
pub async fn secured_server(
    binary: Option<std::path::PathBuf>,
) -> anyhow::Result<(CacheServer, String, Vec<String>)> {
    let options = ServerOptions {
        binary,
        ..ServerOptions::args(&["--auth", "required"])
    };
    let server = CacheServer::start(Backend::Local, options);
    let writer = server.create_token("write", "bench-writer", &[]);
    let reader = server.create_token("read", "bench-reader", &[]);
    let paths = upload_small(&server, Some(&writer)).await?;
    Ok((server, reader, paths))
}

/// Writes the small blobs under `root/cas`, named by their BLAKE3, for
/// nginx; their paths.
pub fn write_small(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for i in 0..SMALL_BLOBS {
        let blob = random_bytes(SMALL_SIZE, i as u64 + 1);
        let hex = digest(&blob).to_string();
        std::fs::write(root.join("cas").join(&hex), &blob)?;
        paths.push(format!("/cas/{hex}"));
    }
    Ok(paths)
}

/// Writes a 1 GiB random file named by its BLAKE3 under `root/cas`; its hex.
pub fn write_large(root: &Path, scratch: &Path) -> anyhow::Result<String> {
    let large = scratch.join("large.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&large)?);
    let mut hasher = blake3::Hasher::new();
    for i in 0..LARGE_MIB {
        let chunk = random_bytes(1 << 20, 10_000 + i as u64);
        hasher.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.flush()?;
    let hex = hasher.finalize().to_hex().to_string();
    std::fs::rename(&large, root.join("cas").join(&hex))?;
    Ok(hex)
}
