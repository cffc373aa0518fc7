#!/bin/sh
# The cache-server image's base, run inside the Debian image (its changes
# are the layer): CA certificates (for S3 over HTTPS), the non-root user
# 10001 and its data folder.
set -eu
if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
fi
groupadd --system --gid 10001 cache-server
useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/cache-server --no-create-home \
  --shell /usr/sbin/nologin cache-server
install -d -o 10001 -g 10001 -m 0750 /var/lib/cache-server
