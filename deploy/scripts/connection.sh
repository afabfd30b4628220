#!/usr/bin/env bash
# Tell the flwr CLI (on a workstation, or the SuperLink host) how to reach a SuperLink:
# writes the connection NAME into $FLWR_HOME/config.toml and makes it the default.
#   connection.sh NAME CONTROL_ADDRESS CA_CERT      e.g. connection.sh fedkt 10.0.0.1:9093 certs/ca.crt
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# -eq 3 ] || die "usage: connection.sh NAME CONTROL_ADDRESS CA_CERT"
check_cert "CA certificate" "$3"
mkdir -p "$FLWR_HOME"
ca=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
python3 - "$FLWR_HOME/config.toml" "$1" "$2" "$ca" <<'PY'
import re, sys
from pathlib import Path
path, name, address, ca = Path(sys.argv[1]), *sys.argv[2:]
text = path.read_text() if path.exists() else ""
# Drop an older [superlink.NAME] block and the default line, then append ours.
text = re.sub(rf"(?ms)^\[superlink\.{re.escape(name)}\]\n.*?(?=^\[|\Z)", "", text)
text = re.sub(r"(?m)^default = .*\n", "", text)
if "[superlink]" not in text:
    text = "[superlink]\n" + text
text = text.replace("[superlink]\n", f'[superlink]\ndefault = "{name}"\n', 1)
text = text.rstrip("\n") + f'\n\n[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{ca}"\n'
path.write_text(text)
PY
echo "flwr connection '$1' -> $2 (CA $ca) in $FLWR_HOME/config.toml"
