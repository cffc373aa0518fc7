#!/bin/sh
# Builds the service into dist/ as one static binary, from the vendored
# modules (offline). In CI with modules from the network, keep them between
# runs with the folder cache:
#   cachectl cache restore --name go-modules --key-files go.sum --path "$(go env GOMODCACHE)"
set -eu
cd "$(dirname "$0")"
CGO_ENABLED=0 go build -mod=vendor -trimpath -o dist/go-service .
