#!/usr/bin/env bash
# Create a SuperNode's authentication key pair (ECDSA P-384, OpenSSH format: the only
# kind Flower's SuperNode authentication accepts).
#   make-node-key.sh OUT_DIR NAME   ->  OUT_DIR/NAME.key (stays on the node), NAME.key.pub
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -eq 2 ] || die "usage: make-node-key.sh OUT_DIR NAME"
mkdir -p "$1"
[ -e "$1/$2.key" ] && die "$1/$2.key exists; not overwriting a node's key"
ssh-keygen -q -t ecdsa -b 384 -N "" -C "$2" -f "$1/$2.key"
echo "$1/$2.key (private, for the node) and $1/$2.key.pub (register it on the SuperLink)"
