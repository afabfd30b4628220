#!/usr/bin/env bash
# Start a SuperNode over gRPC (grpc-rere, TLS, authenticated); runs in the foreground.
#   supernode.sh FLEET_ADDRESS CA_CERT NODE_KEY PARTITION_ID [DATA_DIR]
# PARTITION_ID picks this client's share of the federation the experiment config defines;
# DATA_DIR is where this machine keeps its dataset files (fedkt data fetch NAME --data-dir DIR).
# Environment: CLIENTAPPIO_PORT (this node's local runtime API, default 9094);
# WARM_CLIENTAPP (default 1: one fedkt-clientapp-worker process runs every message of every
# run, next to the SuperNode started with --isolation process; 0: Flower's default, a fresh
# flwr-clientapp process per message).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -ge 4 ] && [ $# -le 5 ] || die "usage: supernode.sh FLEET_ADDRESS CA_CERT NODE_KEY PARTITION_ID [DATA_DIR]"
check_cert "CA certificate" "$2"
[ -r "$3" ] || die "node key $3 not found"
[[ $4 =~ ^[0-9]+$ ]] || die "PARTITION_ID must be a non-negative integer, got '$4'"
config="partition-id=$4"
[ $# -eq 5 ] && config+=" data-dir=\"$5\""
port="${CLIENTAPPIO_PORT:-9094}"
isolation=()
if [ "${WARM_CLIENTAPP:-1}" = 1 ]; then
  # $$ becomes the SuperNode's PID at the exec below: the worker exits with it.
  fedkt-clientapp-worker --runtime-api-address "127.0.0.1:$port" --parent-pid $$ &
  isolation=(--isolation process)
fi
# fedkt-supernode is Flower's flower-supernode polling the SuperLink every
# ${FEDKT_SUPERNODE_POLL:-0.25} s instead of every 3 s (clients/supernode.py).
exec fedkt-supernode --grpc-rere --superlink "$1" --root-certificates "$2" \
  --auth-supernode-private-key "$3" --node-config "$config" "${isolation[@]}" \
  --host 127.0.0.1 --port "$port" --max-retries "${MAX_RETRIES:-100}"
