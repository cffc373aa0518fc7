//! `folder-bench`: `cachectl cache save|restore` against the actions/cache
//! approach, on the same tree and the same cache server in the same run.
//!
//! The tree: 10,000 files in nested folders, about 100 MB (half random,
//! half text, like a dependency folder of code and binaries). Measured:
//! the first save, the save after a one-file change, and a restore into a
//! fresh folder with an empty local content store. The reference tars the
//! whole folder, compresses it with zstd (level 3) and uploads it as one
//! blob (`PUT /v1/cas/{digest}`), and restores by downloading it and
//! unpacking; after a one-file change it uploads the whole archive again.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin folder-bench
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use cachectl_e2e::CacheServer;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::random_bytes;
use serde_json::json;

const FILES: usize = 10_000;
const TOTAL_BYTES: usize = 100 * 1024 * 1024;

fn generate(root: &Path) -> anyhow::Result<()> {
    let per_file = TOTAL_BYTES / FILES;
    for i in 0..FILES {
        let folder = root.join(format!("pkg{:03}/lib{:02}", i % 200, (i / 200) % 10));
        std::fs::create_dir_all(&folder)?;
        let mut content = random_bytes(per_file / 2, i as u64 + 7);
        content.extend(
            format!("export const v{i} = {i};\n")
                .repeat(per_file / 2 / 24)
                .into_bytes(),
        );
        std::fs::write(folder.join(format!("index{i}.js")), content)?;
    }
    Ok(())
}

/// `cachectl cache VERB` in `project`, returning its JSON and wall seconds.
fn cachectl(
    project: &Project,
    url: &str,
    verb: &str,
    path: &str,
    cache_dir: &Path,
) -> anyhow::Result<(serde_json::Value, f64)> {
    let started = Instant::now();
    let run = project.cachectl(
        &[
            "cache",
            verb,
            "--json",
            "--cache",
            url,
            "--name",
            "deps",
            "--key-files",
            "lock.txt",
            "--path",
            path,
        ],
        &[(
            "CACHECTL_CACHE_DIR",
            cache_dir.to_str().context("a UTF-8 path")?,
        )],
    );
    let seconds = started.elapsed().as_secs_f64();
    if run.code != 0 {
        bail!("cachectl cache {verb} failed: {}", run.stderr);
    }
    Ok((run.json(), seconds))
}

/// The reference save: tar + zstd of the whole folder, one PUT. Returns
/// the bytes sent, the seconds and the archive's digest.
async fn tar_save(
    client: &reqwest::Client,
    url: &str,
    root: &Path,
    scratch: &Path,
) -> anyhow::Result<(u64, f64, String)> {
    let started = Instant::now();
    let archive = scratch.join("deps.tar.zst");
    {
        let root = root.to_owned();
        let archive = archive.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let file = std::fs::File::create(&archive)?;
            let encoder = zstd::Encoder::new(file, 3)?;
            let mut builder = tar::Builder::new(encoder);
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &root)?;
            builder.into_inner()?.finish()?;
            Ok(())
        })
        .await??;
    }
    let bytes = std::fs::read(&archive)?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    let sent = bytes.len() as u64;
    let status = client
        .put(format!("{url}/v1/cas/{digest}"))
        .body(bytes)
        .send()
        .await?
        .status();
    if !status.is_success() {
        bail!("the archive upload answered {status}");
    }
    Ok((sent, started.elapsed().as_secs_f64(), digest))
}

/// The reference restore: download the archive, unpack it.
async fn tar_restore(
    client: &reqwest::Client,
    url: &str,
    digest: &str,
    into: &Path,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let bytes = client
        .get(format!("{url}/v1/cas/{digest}"))
        .send()
        .await?
        .bytes()
        .await?;
    let received = bytes.len() as u64;
    let into = into.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let decoder = zstd::Decoder::new(&bytes[..])?;
        tar::Archive::new(decoder).unpack(&into)?;
        Ok(())
    })
    .await??;
    Ok((received, started.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = CacheServer::local();
    let url = server.base_url();
    let client = reqwest::Client::builder().no_proxy().build()?;
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    let tree = project.path().join("deps");
    generate(&tree)?;
    let scratch = tempfile::tempdir()?;

    // Ours.
    let cache_dir = scratch.path().join("cachectl");
    let (first, first_s) = cachectl(&project, &url, "save", "deps", &cache_dir)?;
    std::fs::write(tree.join("pkg007/lib03/index607.js"), "changed\n")?;
    let (second, second_s) = cachectl(&project, &url, "save", "deps", &cache_dir)?;
    let fresh_dir = scratch.path().join("fresh-cachectl");
    let (restored, restore_s) = cachectl(&project, &url, "restore", "restored", &fresh_dir)?;

    // The reference, on the same (changed) tree, then after one more change.
    std::fs::write(tree.join("pkg007/lib03/index607.js"), "changed again\n")?;
    let (tar_first, tar_first_s, _) = tar_save(&client, &url, &tree, scratch.path()).await?;
    std::fs::write(tree.join("pkg007/lib03/index607.js"), "changed once more\n")?;
    let (tar_second, tar_second_s, digest) = tar_save(&client, &url, &tree, scratch.path()).await?;
    let unpack_into = scratch.path().join("untarred");
    std::fs::create_dir_all(&unpack_into)?;
    let (tar_received, tar_restore_s) = tar_restore(&client, &url, &digest, &unpack_into).await?;

    let ours_first = first["uploaded_bytes"].as_u64().unwrap_or(0);
    let ours_second = second["uploaded_bytes"].as_u64().unwrap_or(0);
    let ours_restore = restored["downloaded_bytes"].as_u64().unwrap_or(0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let report = json!({
        "tree": {"files": FILES, "bytes": first["bytes"]},
        "first_save": {"cachectl_bytes": ours_first, "cachectl_s": first_s, "tar_bytes": tar_first, "tar_s": tar_first_s,
                        "bytes_ratio": ratio(ours_first as f64, tar_first as f64), "time_ratio": ratio(first_s, tar_first_s)},
        "one_file_change": {"cachectl_bytes": ours_second, "cachectl_s": second_s, "tar_bytes": tar_second, "tar_s": tar_second_s,
                        "bytes_ratio": ratio(ours_second as f64, tar_second as f64), "time_ratio": ratio(second_s, tar_second_s)},
        "restore": {"cachectl_bytes": ours_restore, "cachectl_s": restore_s, "tar_bytes": tar_received, "tar_s": tar_restore_s,
                        "bytes_ratio": ratio(ours_restore as f64, tar_received as f64), "time_ratio": ratio(restore_s, tar_restore_s)},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
