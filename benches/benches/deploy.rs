//! The CPU costs of the deploy step, each next to a reference measured in
//! the same run: the base key over typical manifests (reference: reading the
//! same files), the app layer tar + gzip of a 5 MB / 500-file folder
//! (reference: copying the same files), and the server's verified upload of
//! an 8 MiB blob into memory storage (reference: BLAKE3 of the same bytes).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use cache_cli::key::{KeySpec, Recipe, compute};
use cache_cli::pack::layer::{Compression, PackOptions, pack_with};
use cache_server::blob::upload::{Body, ContentCheck, UploadSettings, store_verified};
use cache_server::storage::{Storage, StorageLocation, StorageOptions};
use cachectl_e2e::data::{compressible_bytes, random_bytes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn manifests(root: &Path) {
    let requirements: String = (0..150)
        .map(|i| format!("package-{i}==1.{i}.0\n"))
        .collect();
    std::fs::write(root.join("requirements.txt"), requirements).unwrap();
    std::fs::write(root.join("package-lock.json"), compressible_bytes(1 << 20)).unwrap();
    std::fs::write(root.join("Cargo.lock"), compressible_bytes(200 << 10)).unwrap();
    std::fs::write(
        root.join("Dockerfile.base"),
        "FROM python:3.12-slim\nRUN pip install -r requirements.txt\n",
    )
    .unwrap();
}

fn app(root: &Path) {
    for i in 0..500 {
        let folder = root.join(format!("pkg{}", i % 20));
        std::fs::create_dir_all(&folder).unwrap();
        let mut content = random_bytes(5_000, i as u64);
        content.extend(compressible_bytes(5_000));
        std::fs::write(folder.join(format!("file{i}.py")), content).unwrap();
    }
}

fn deploy_costs(c: &mut Criterion) {
    let project = tempfile::tempdir().unwrap();
    manifests(project.path());
    let patterns = vec![
        "requirements.txt".to_owned(),
        "package-lock.json".to_owned(),
        "Cargo.lock".to_owned(),
    ];
    let recipe = Recipe::Dockerfile("Dockerfile.base".into());
    let args = BTreeMap::from([("PYTHON".to_owned(), "3.12".to_owned())]);
    let spec = KeySpec {
        root: project.path(),
        manifests: &patterns,
        recipe: &recipe,
        args: &args,
        platform: "linux/amd64",
        upstreams: &[],
    };
    let mut group = c.benchmark_group("base_key");
    group.bench_function("reference_read_manifests", |b| {
        b.iter(|| {
            for name in [
                "requirements.txt",
                "package-lock.json",
                "Cargo.lock",
                "Dockerfile.base",
            ] {
                black_box(std::fs::read(project.path().join(name)).unwrap());
            }
        })
    });
    group.bench_function("cachectl_key", |b| {
        b.iter(|| compute(black_box(&spec)).unwrap())
    });
    group.finish();

    let context = tempfile::tempdir().unwrap();
    app(context.path());
    let staging = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("app_layer_5mb_500_files");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(5_000_000));
    group.bench_function("reference_copy_files", |b| {
        b.iter(|| {
            let target = tempfile::tempdir_in(staging.path()).unwrap();
            cache_cli::commands::bench::copy_tree(context.path(), target.path()).unwrap();
        })
    });
    group.bench_function("tar_gzip1", |b| {
        b.iter(|| {
            let options = PackOptions {
                compression: Compression::Gzip(1),
                prefix: "app",
                ..PackOptions::default()
            };
            pack_with(context.path(), staging.path(), options).unwrap()
        })
    });
    group.bench_function("tar_zstd3", |b| {
        b.iter(|| {
            let options = PackOptions {
                compression: Compression::Zstd(3),
                prefix: "app",
                ..PackOptions::default()
            };
            pack_with(context.path(), staging.path(), options).unwrap()
        })
    });
    group.finish();

    let blob = random_bytes(8 << 20, 7);
    let digest = cache_proto::Digest::of(&blob);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = UploadSettings {
        max_size: 1 << 30,
        zstd_level: 3,
    };
    let mut group = c.benchmark_group("verified_upload_8mib");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(blob.len() as u64));
    group.bench_function("reference_blake3", |b| {
        b.iter(|| blake3::hash(black_box(&blob)))
    });
    group.bench_function("store_verified_memory", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let storage =
                    Storage::open(&StorageLocation::Memory, StorageOptions::default()).unwrap();
                let path = object_store::path::Path::from("cas/x");
                store_verified(
                    &storage,
                    path,
                    ContentCheck::Blake3(digest),
                    Body::Plain(&blob[..]),
                    settings,
                    false,
                )
                .await
                .unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, deploy_costs);
criterion_main!(benches);
