# Sourced by the other scripts: Flower offline and quiet, with its own home.
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="${FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION:-1}"
export FLWR_HOME="${FLWR_HOME:-$HOME/.flwr}"
die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
# check_cert WHAT CERT [KEY]: stop with one line naming the file unless CERT is a readable PEM
# certificate (and KEY, if given, its matching private key). Without it a garbled file shows
# up as a page of gRPC C-core lines and "failed to connect ... Connection refused".
check_cert() {
  local what=$1 cert=$2 key=${3:-} why
  [ -r "$cert" ] || die "$what $cert not found"
  [ -z "$key" ] || [ -r "$key" ] || die "private key $key not found"
  why=$(python3 - "$cert" "$key" 2>&1 <<'PY'
import ssl, sys
cert, key = sys.argv[1], sys.argv[2]
try:
    if key:
        ssl.create_default_context().load_cert_chain(cert, key)
    else:
        ssl.create_default_context(cafile=cert)
except (ssl.SSLError, ValueError, OSError) as exc:
    print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    sys.exit(1)
PY
  ) || die "$what $cert${key:+ / $key}: not a usable PEM certificate${key:+ and matching key} ($why)"
}
