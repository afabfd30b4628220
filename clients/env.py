"""Settings read from the environment by fedkt's node-side commands (SuperNode, worker,
ServerApp), checked the same way everywhere."""

from __future__ import annotations

import os

from fedkt.errors import FedktError


def env_seconds(name: str, default: float, upper: float) -> float:
    """Seconds in (0, ``upper``] from environment variable ``name`` (unset or empty:
    ``default``); anything else is a one-line FedktError naming the variable."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= upper:
        raise FedktError(f"{name} must be seconds in (0, {upper:g}], got {raw!r}")
    return value
