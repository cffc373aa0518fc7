//! `folder-bench`: `cachectl cache save|restore` against the actions/cache
//! approach, on the same tree and the same cache server in the same run.
//!
//! The tree: 10,000 files in nested folders, about 100 MB (half random,
//! half text, like a dependency folder of code and binaries). Measured:
//! the first save, the save after a one-file change, and a restore into a
//! fresh folder with an empty local content store; in several rounds (5
//! unless `folder-bench ROUNDS`), each on a fresh server, the side that
//! goes first alternating; the report gives the medians. The reference tars the
//! whole folder, compresses it with zstd (level 3) and uploads it as one
//! blob (`PUT /v1/cas/{digest}`), and restores by downloading it and
//! unpacking; after a one-file change it uploads the whole archive again.
//!
//! ```text
//! cargo run --release -p cachectl-benches --bin folder-bench [ROUNDS]
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

/// One round's figures: `(bytes, seconds)` of each step.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    first: (u64, f64),
    change: (u64, f64),
    restore: (u64, f64),
}

/// Ours on `tree`: first save, save after a one-file change, restore into
/// a fresh folder with an empty local store.
fn ours(project: &Project, url: &str, tree: &Path, round: usize) -> anyhow::Result<Round> {
    let scratch = project.path().join(format!("round{round}"));
    let cache_dir = scratch.join("cachectl");
    let (first, first_s) = cachectl(project, url, "save", "deps", &cache_dir)?;
    std::fs::write(
        tree.join("pkg007/lib03/index607.js"),
        format!("changed {round}\n"),
    )?;
    let (second, second_s) = cachectl(project, url, "save", "deps", &cache_dir)?;
    let fresh_dir = scratch.join("fresh-cachectl");
    let into = format!("round{round}/restored");
    let (restored, restore_s) = cachectl(project, url, "restore", &into, &fresh_dir)?;
    let bytes = |v: &serde_json::Value, field: &str| v[field].as_u64().unwrap_or(0);
    Ok(Round {
        first: (bytes(&first, "uploaded_bytes"), first_s),
        change: (bytes(&second, "uploaded_bytes"), second_s),
        restore: (bytes(&restored, "downloaded_bytes"), restore_s),
    })
}

/// The reference on `tree`, the same three steps.
async fn reference(
    client: &reqwest::Client,
    url: &str,
    tree: &Path,
    scratch: &Path,
    round: usize,
) -> anyhow::Result<Round> {
    let (first, first_s, _) = tar_save(client, url, tree, scratch).await?;
    std::fs::write(
        tree.join("pkg007/lib03/index607.js"),
        format!("changed again {round}\n"),
    )?;
    let (second, second_s, digest) = tar_save(client, url, tree, scratch).await?;
    let into = scratch.join("untarred");
    std::fs::create_dir_all(&into)?;
    let (received, restore_s) = tar_restore(client, url, &digest, &into).await?;
    Ok(Round {
        first: (first, first_s),
        change: (second, second_s),
        restore: (received, restore_s),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Rounds run (default 5); `folder-bench ROUNDS`.
fn rounds() -> usize {
    std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(5)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let project = Project::new();
    project.write("lock.txt", "v1\n");
    let tree = project.path().join("deps");
    generate(&tree)?;
    let original = std::fs::read(tree.join("pkg007/lib03/index607.js"))?;
    let mut results: Vec<(Round, Round)> = Vec::new();
    let mut kept = Vec::new();
    // Each round has a fresh server and folders, and nothing is deleted
    // until the end: on this machine's ext4 (no journal) creating a file
    // scans past every inode deleted in the last seconds, which would
    // charge one side for the other's clean-up. The order alternates.
    for round in 0..rounds() {
        let server = CacheServer::local();
        let url = server.base_url();
        let scratch = tempfile::tempdir_in(project.path())?;
        std::fs::write(tree.join("pkg007/lib03/index607.js"), &original)?;
        let (mine, theirs) = if round % 2 == 0 {
            let mine = ours(&project, &url, &tree, round)?;
            std::fs::write(tree.join("pkg007/lib03/index607.js"), &original)?;
            let theirs = reference(&client, &url, &tree, scratch.path(), round).await?;
            (mine, theirs)
        } else {
            let theirs = reference(&client, &url, &tree, scratch.path(), round).await?;
            std::fs::write(tree.join("pkg007/lib03/index607.js"), &original)?;
            let mine = ours(&project, &url, &tree, round)?;
            (mine, theirs)
        };
        eprintln!(
            "round {round}: first save {:.2} s / {:.2} s, one-file change {:.2} s / {:.2} s, restore {:.2} s / {:.2} s",
            mine.first.1,
            theirs.first.1,
            mine.change.1,
            theirs.change.1,
            mine.restore.1,
            theirs.restore.1
        );
        results.push((mine, theirs));
        kept.push((server, scratch));
    }
    let step = |pick: fn(&Round) -> (u64, f64)| {
        let ours_s = median(results.iter().map(|(m, _)| pick(m).1).collect());
        let tar_s = median(results.iter().map(|(_, t)| pick(t).1).collect());
        let ours_b = median(results.iter().map(|(m, _)| pick(m).0 as f64).collect());
        let tar_b = median(results.iter().map(|(_, t)| pick(t).0 as f64).collect());
        let ratios: Vec<f64> = results
            .iter()
            .map(|(m, t)| pick(m).1 / pick(t).1.max(1e-9))
            .collect();
        json!({
            "cachectl_bytes": ours_b, "cachectl_s": ours_s, "tar_bytes": tar_b, "tar_s": tar_s,
            "bytes_ratio": ours_b / tar_b.max(1.0), "time_ratio": ours_s / tar_s.max(1e-9),
            "round_time_ratios": ratios,
        })
    };
    let report = json!({
        "tree": {"files": FILES, "bytes": TOTAL_BYTES},
        "rounds": results.len(),
        "first_save": step(|r| r.first),
        "one_file_change": step(|r| r.change),
        "restore": step(|r| r.restore),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
