"""Hyperparameters tuned on validation data, never on test data.

A comparison's ``tune`` section gives, per strategy (or ``"*"`` for every strategy), a
small grid of config values. For each strategy and partition setting, every combination
runs on the tuning seeds with ``evaluation.split: validation`` (a fraction of each
client's *training* data held out and scored; the test split is never read); the
combination with the best mean validation ALMA is then used for that strategy's test
cells. The choices and every trial's score go into ``tuning.json`` and the report.

Trials run on a fault-free federation unless ``under_faults`` is set: a defender picks
hyperparameters before knowing who will attack or drop out, and tuning under the very
attack a table then measures would let the attack choose the defence. It also makes a
robustness study cheap: every attack setting of one comparison has the same trials, so
``--reuse`` of the clean comparison's folder skips them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedkt.config import ExperimentConfig, apply_overrides, build_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve

# What a grid may not change: the data, the evaluation, the seeds and the method itself
# are what make cells comparable.
FROZEN = ("name", "seed", "dataset", "data_dir", "num_clients", "rounds", "fraction", "partition",
          "transfer", "evaluation", "strategy.name", "plugins", "faults", "model")  # fmt: skip


class TuneConfig(BaseModel):
    """``tune:`` in a comparison file."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[int] = Field(default_factory=lambda: [1000], min_length=1)
    grid: dict[str, dict[str, list[Any]]] = Field(min_length=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    under_faults: bool = Field(
        False,
        description="tune with the cells' faults (attackers, stragglers, dropouts); by default "
        "trials run fault-free, as a defender who does not know the attack would tune",
    )

    @field_validator("grid")
    @classmethod
    def _keys(cls, grid: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for strategy, params in grid.items():
            for key, values in params.items():
                if any(key == f or key.startswith(f + ".") for f in FROZEN):
                    raise ValueError(
                        f"{strategy}.{key}: tuning may not change {key} "
                        "(it decides what is compared)"
                    )
                if not values:
                    raise ValueError(f"{strategy}.{key}: give at least one value")
        return grid


@dataclass(frozen=True)
class Trial:
    """One tuning run: a strategy and partition setting, a combination of values, a seed."""

    strategy: str
    partition: str
    values: tuple[tuple[str, Any], ...]
    seed: int
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values) or "defaults"

    @property
    def setting(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        return self.strategy, self.partition, self.values


def combinations(tune: TuneConfig, strategy: str) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the grid for ``strategy`` (its own keys and ``"*"``'s)."""
    params = {**tune.grid.get("*", {}), **tune.grid.get(strategy, {})}
    keys = sorted(params)
    return [tuple(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]


def with_values(
    cfg: ExperimentConfig, values: tuple[tuple[str, Any], ...], **fields: Any
) -> ExperimentConfig:
    """``cfg`` with the dotted-key ``values`` (and top-level ``fields``) applied."""
    raw = {**json.loads(cfg.to_json()), **fields}
    return build_config(apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values]))


def trials(tune: TuneConfig, cells: list[Any]) -> list[Trial]:
    """The tuning runs for ``cells`` (a comparison's), each config resolved up front."""
    out = []
    first: dict[tuple[str, str], ExperimentConfig] = {}
    for c in cells:
        first.setdefault((c.strategy, c.partition), c.config)
    for (strategy, partition), cfg in first.items():
        for values in combinations(tune, strategy):
            for seed in tune.seeds:
                evaluation = {**json.loads(cfg.evaluation.model_dump_json()), "split": "validation",
                              "validation_fraction": tune.validation_fraction}  # fmt: skip
                fields: dict[str, Any] = {"seed": seed, "evaluation": evaluation}
                if not tune.under_faults:
                    fields["faults"] = {}  # every fault at its default: none
                try:
                    trial_cfg = with_values(cfg, values, **fields)
                    resolve(trial_cfg)
                except ConfigError as exc:
                    raise ConfigError(f"tune.grid ({strategy}, {dict(values)}): {exc}") from None
                out.append(Trial(strategy, partition, values, seed, trial_cfg))
    return out


def choose(done: list[tuple[Trial, float | None]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(strategy, partition) -> {"values": best combination, "scores": every combination's
    mean validation ALMA}. Ties keep the first combination in grid order."""
    scores: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[float]] = {}
    for trial, alma in done:
        scores.setdefault(trial.setting, [])
        if alma is not None:
            scores[trial.setting].append(alma)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (strategy, partition, values), vals in scores.items():
        mean = sum(vals) / len(vals) if vals else None
        entry = out.setdefault((strategy, partition), {"values": None, "best": None, "scores": []})
        entry["scores"].append(
            {"values": dict(values), "validation_alma": mean, "seeds": len(vals)}
        )
        if mean is not None and (entry["best"] is None or mean > entry["best"]):
            entry["values"], entry["best"] = values, mean
    return out
