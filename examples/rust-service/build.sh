#!/bin/sh
# Builds the service into dist/ as one static binary (glibc's crt-static),
# which runs on the empty base `cachectl build` puts it on. In CI, keep
# target/ between runs with the folder cache:
#   cachectl cache restore --name cargo-target --key-files Cargo.lock --path target
set -eu
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$host"
mkdir -p dist
cp "${CARGO_TARGET_DIR:-target}/$host/release/hello-service" dist/
