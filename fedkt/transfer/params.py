"""Checks for the parameters of knowledge kinds, fusions and losses. Each raises
ValueError with the parameter's name; the registry turns it into a one-line ConfigError
naming the config field."""

from __future__ import annotations

from typing import Any


def positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def count(name: str, value: Any) -> int:
    """An integer >= 1 (iterations, steps, top-k)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value
