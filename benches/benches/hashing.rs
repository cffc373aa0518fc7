//! Per-frame costs of the upload path: BLAKE3 of a 1 MiB chunk, zstd of the
//! same chunk (compressible and not), and decompression, next to a plain
//! copy of 1 MiB as the reference measured in the same run.

use std::hint::black_box;

use cachectl_e2e::data::{compressible_bytes, random_bytes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FRAME: usize = 1024 * 1024;

fn frame_costs(c: &mut Criterion) {
    let text = compressible_bytes(FRAME);
    let noise = random_bytes(FRAME, 1);
    let text_frame = zstd::bulk::compress(&text, 3).expect("compress");

    let mut group = c.benchmark_group("frame_1mib");
    group.throughput(Throughput::Bytes(FRAME as u64));
    group.bench_function("reference_copy", |b| b.iter(|| black_box(noise.clone())));
    group.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&noise))));
    group.bench_function("zstd3_compress_text", |b| {
        b.iter(|| zstd::bulk::compress(black_box(&text), 3).expect("compress"))
    });
    group.bench_function("zstd3_compress_incompressible", |b| {
        b.iter(|| zstd::bulk::compress(black_box(&noise), 3).expect("compress"))
    });
    group.bench_function("zstd_decompress_text", |b| {
        b.iter(|| zstd::bulk::decompress(black_box(&text_frame), FRAME).expect("decompress"))
    });
    group.finish();
}

criterion_group!(benches, frame_costs);
criterion_main!(benches);
