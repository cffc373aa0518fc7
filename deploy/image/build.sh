#!/bin/sh
# Builds cache-server for the image into deploy/image/dist/ (or the folder
# given), stripped. CACHECTL_PROFILE=debug takes the debug build instead
# (the tests').
#
#   deploy/image/build.sh [DIST]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dist=${1:-$root/deploy/image/dist}
profile=${CACHECTL_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --quiet --release --locked -p cache-server --manifest-path "$root/Cargo.toml"
else
  cargo build --quiet --locked -p cache-server --manifest-path "$root/Cargo.toml"
fi
mkdir -p "$dist"
cp "${CARGO_TARGET_DIR:-$root/target}/$profile/cache-server" "$dist/cache-server"
# Symbols are for debuggers, not for the image (114 MB against 15).
if command -v strip >/dev/null 2>&1; then strip "$dist/cache-server"; fi
