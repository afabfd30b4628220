"""Environment Flower and Ray need to run offline and quietly, set before they start."""

from __future__ import annotations

import os
from pathlib import Path

FLOWER_DEFAULTS = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # No implicit ray.init: fedkt starts Ray itself. When a stop shuts Ray down while one of
    # Flower's threads still calls into it, auto-connect started a second Ray instance
    # (seconds, with warnings) just to fail on it.
    "RAY_ENABLE_AUTO_CONNECT": "0",
}


def prepare_environment() -> None:
    """Offline Flower with its own home, unless the user chose otherwise."""
    for key, value in FLOWER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault(
        "FLWR_HOME",
        str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedkt" / "flwr-home"),
    )
