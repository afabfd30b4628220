#!/usr/bin/env bash
# System packages the integration tests use: Debian's prometheus (the monitoring test
# lets a real Prometheus scrape a fedkt server) and openssl (deployment certificates).
# Needs root or sudo; already-installed packages are left alone.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
