#!/usr/bin/env bash
# Start the SuperLink with TLS and SuperNode authentication (runs in the foreground).
#   superlink.sh CERT_DIR
# Environment: FLEET_ADDRESS (SuperNodes connect here, default 0.0.0.0:9092),
# CONTROL_HOST / CONTROL_PORT (flwr CLI and the ServerApp runtime, default 0.0.0.0 / 9093),
# DATABASE (state file, so registrations survive a restart; default $FLWR_HOME/superlink.db;
# :flwr-in-memory: is faster and forgets the registrations at a restart).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -eq 1 ] || die "usage: superlink.sh CERT_DIR"
certs=$1
for f in ca.crt server.crt server.key; do [ -r "$certs/$f" ] || die "missing $certs/$f (run make-certs.sh)"; done
check_cert "CA certificate" "$certs/ca.crt"
check_cert "server certificate" "$certs/server.crt" "$certs/server.key"
mkdir -p "$FLWR_HOME"
exec flower-superlink \
  --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.crt" --ssl-keyfile "$certs/server.key" \
  --enable-supernode-auth \
  --fleet-api-address "${FLEET_ADDRESS:-0.0.0.0:9092}" \
  --host "${CONTROL_HOST:-0.0.0.0}" --port "${CONTROL_PORT:-9093}" \
  --database "${DATABASE:-$FLWR_HOME/superlink.db}" \
  --disable-runtime-dependency-installation
