#!/usr/bin/env bash
# The GitHub Action's second step: runs the command the `command` input
# names with the other inputs as cachectl's CACHECTL_* variables (only
# those given: an empty input leaves cachectl.toml's setting). cachectl
# writes the step outputs ($GITHUB_OUTPUT) and the step summary itself.
set -euo pipefail
bin="${CACHECTL_BIN:-cachectl}"

setting() { # VARIABLE VALUE: exported only when the input was given
  if [ -n "$2" ]; then export "$1=$2"; fi
}
setting CACHECTL_CONFIG "${INPUT_CONFIG:-}"
setting CACHECTL_ONLY "${INPUT_ONLY:-}"
setting CACHECTL_CACHE "${INPUT_CACHE:-}"
setting CACHECTL_CACHE_TOKEN "${INPUT_CACHE_TOKEN:-}"
setting CACHECTL_OIDC_AUDIENCE "${INPUT_OIDC_AUDIENCE:-}"
setting CACHECTL_REGISTRY_USER "${INPUT_REGISTRY_USER:-}"
setting CACHECTL_REGISTRY_PASSWORD "${INPUT_REGISTRY_PASSWORD:-}"
setting CACHECTL_BASE_IMAGE "${INPUT_IMAGE:-}"
setting CACHECTL_APP_IMAGE "${INPUT_APP_IMAGE:-}"
if [ "${INPUT_REQUIRE_CACHE:-false}" = true ]; then export CACHECTL_REQUIRE_CACHE=true; fi

# Extra arguments, split at spaces (as a user writes them in `args:`).
read -r -a extra <<<"${INPUT_ARGS:-}"

case "${INPUT_COMMAND:-build}" in
  build) exec "$bin" build "${extra[@]}" ;;
  ensure-base) exec "$bin" ensure-base "${extra[@]}" ;;
  cache-save | cache-restore)
    if [ -z "${INPUT_NAME:-}" ] || [ -z "${INPUT_PATH:-}" ] || [ -z "${INPUT_KEY_FILES:-}" ]; then
      echo "::error::${INPUT_COMMAND} needs the name, path and key-files inputs"
      exit 2
    fi
    exec "$bin" cache "${INPUT_COMMAND#cache-}" --name "$INPUT_NAME" --path "$INPUT_PATH" \
      --key-files "$INPUT_KEY_FILES" "${extra[@]}"
    ;;
  *)
    echo "::error::the command input is ${INPUT_COMMAND}: expected build, ensure-base, cache-save or cache-restore"
    exit 2
    ;;
esac
