# Sourced by the other scripts: Flower offline and quiet, with its own home.
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="${FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION:-1}"
export FLWR_HOME="${FLWR_HOME:-$HOME/.flwr}"
die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
