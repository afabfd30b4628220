"""What a round produced, typed: the strategy's report to the loop, and the round line.

:class:`RoundReport` is what aggregation returns (who took part, the fusion weights, what
was rejected and why, whether the round was skipped): the loop reads nothing else from a
strategy. :class:`RoundRecord` is one line of ``rounds.jsonl``.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Rejection:
    """A reply the server did not use: from which node, why, and under which category
    (see :data:`fedkt.errors.REJECTION_REASONS`)."""

    node: int
    reason: str
    category: str = "invalid"


@dataclass
class RoundReport:
    """The outcome of aggregating one round's replies.

    ``participants``: partition ids whose replies were used, in order;
    ``fusion_weights``: their (k, k) fusion weights (row n: whom client n learned from),
    None for strategies that fuse nothing; ``skipped``: no aggregation took place (too
    few valid replies)."""

    participants: list[int] = field(default_factory=list)
    fusion_weights: np.ndarray | None = None
    rejected: list[Rejection] = field(default_factory=list)
    skipped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundRecord:
    """One round's line in ``rounds.jsonl`` (accuracies are fractions; None: not measured)."""

    round: int
    alma: float | None = None
    global_accuracy: float | None = None
    worst_client_accuracy: float | None = None
    local_alma: float | None = None
    participants: int = 0
    steps: float | None = None  #: optimiser steps per participating client (mean)
    sampled: int = 0  #: clients picked for the round
    replied: int = 0  #: of those, clients that completed every phase asked of them
    failed: int = 0  #: of those, clients that did not (replied + failed == sampled)
    rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    bytes_up: int = 0
    bytes_down: int = 0
    wall_seconds: float = 0.0
    honest_alma: float | None = None  #: ALMA of the honest clients (only with attackers)
    attacked: bool = False  #: the run has attackers: the line carries ``honest_alma``
    note: str = ""  #: why a round was skipped or failed
    #: metrics of the method's server step (FedDF: its steps and validation accuracy)
    server: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line: ``honest_alma`` only with attackers, ``note`` only when set."""
        out = asdict(self)
        attacked, note, server = out.pop("attacked"), out.pop("note"), out.pop("server")
        honest = out.pop("honest_alma")
        head = [
            "round",
            "alma",
            "global_accuracy",
            "worst_client_accuracy",
            "local_alma",
            "participants",
            "steps",
        ]
        line = {k: out.pop(k) for k in head}
        if attacked:
            line["honest_alma"] = honest
        tail = {k: out.pop(k) for k in ("bytes_up", "bytes_down", "wall_seconds")}
        line.update(out)
        if note:
            line["note"] = note
        if server:
            line["server"] = server
        line.update(tail)
        return line

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> RoundRecord:
        """A record read back from ``rounds.jsonl`` (unknown keys are ignored; a known
        key holding the wrong kind of value is a ``ValueError`` naming it)."""
        known = {k: v for k, v in line.items() if k in cls.__dataclass_fields__}
        for name, value in known.items():
            if not _fits(value, cls.__dataclass_fields__[name]):
                raise ValueError(f"{name} = {value!r}")
        return cls(**known, attacked="honest_alma" in line)


def _fits(value: Any, spec: Field[Any]) -> bool:
    """Whether ``value`` is the kind of value the field holds, judged by its default
    (None: a number or None; no default: a number)."""
    if spec.default_factory is not MISSING:
        return isinstance(value, type(spec.default_factory()))
    default = spec.default
    if isinstance(default, (bool, str)):
        return isinstance(value, type(default))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number or (default is None and value is None)
