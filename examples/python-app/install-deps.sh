#!/bin/sh
# An offline stand-in for `pip install --target DEST -r requirements.txt`:
# copies each pinned package from vendor/ into DEST. Slow on purpose (a real
# dependency install takes minutes), so that the cached second run shows.
set -eu
dest="$1"
mkdir -p "$dest"
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  name="${line%%==*}"
  version="${line#*==}"
  echo "installing $name $version"
  cp -R "vendor/$name" "$dest/$name"
  printf 'Name: %s\nVersion: %s\n' "$name" "$version" >"$dest/$name/METADATA"
  sleep 1
done <requirements.txt
