#!/usr/bin/env bash
# The GitHub Action's first step: finds cachectl (the `cachectl` input, else
# the one on PATH, else this action's own build, restored from the cache or
# built with cargo) and tells the next step where it is (CACHECTL_BIN in
# $GITHUB_ENV).
set -euo pipefail

found() {
  echo "cachectl: $1 ($("$1" --version))"
  echo "CACHECTL_BIN=$1" >>"$GITHUB_ENV"
  exit 0
}

if [ -n "${INPUT_CACHECTL:-}" ]; then
  [ -x "$INPUT_CACHECTL" ] || { echo "::error::the cachectl input $INPUT_CACHECTL is not an executable file"; exit 1; }
  found "$INPUT_CACHECTL"
fi
if command -v cachectl >/dev/null 2>&1; then
  found "$(command -v cachectl)"
fi
built="$GITHUB_ACTION_PATH/target/release/cachectl"
if [ -x "$built" ]; then
  found "$built"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "::error::no cachectl on PATH and no cargo to build it: give the cachectl input, or set up Rust (e.g. dtolnay/rust-toolchain)"
  exit 1
fi
echo "::group::Building cachectl from $GITHUB_ACTION_PATH (once; the build is cached)"
cargo build --release --locked --quiet -p cache-cli --bin cachectl --manifest-path "$GITHUB_ACTION_PATH/Cargo.toml"
echo "::endgroup::"
found "$built"
