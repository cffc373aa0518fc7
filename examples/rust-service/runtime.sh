#!/bin/sh
# The runtime base: a user for the service and the CA certificates a
# client of HTTPS services needs (the host's bundle, when it has one).
set -eu
out="$1"
mkdir -p "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
printf 'root:x:0:0:root:/:/sbin/nologin\napp:x:10001:10001:app:/app:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\napp:x:10001:\n' >"$out/etc/group"
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -f "$bundle" ]; then cp "$bundle" "$out/etc/ssl/certs/ca-certificates.crt"; break; fi
done
