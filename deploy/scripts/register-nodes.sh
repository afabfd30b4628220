#!/usr/bin/env bash
# Register SuperNode public keys with the SuperLink (only registered nodes may join).
#   register-nodes.sh CONNECTION PUBLIC_KEY [PUBLIC_KEY...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -ge 2 ] || die "usage: register-nodes.sh CONNECTION PUBLIC_KEY [PUBLIC_KEY...]"
conn=$1; shift
for key in "$@"; do
  [ -r "$key" ] || die "public key $key not found"
  flwr supernode register "$key" "$conn" --name "$(basename "$key" .key.pub)"
done
