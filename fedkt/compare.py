"""``fedkt compare``: a matrix of experiments (strategies x partitions x seeds), run
fairly and resumably, summarised as a paper-ready report.

Fairness: every cell is a full experiment config that differs from its neighbours only
in the strategy, the partition settings or the seed, and everything random in fedkt is
derived from (seed, purpose, client, round). Under one seed every strategy therefore
sees exactly the same partitions, transfer set, client samples and initial models.

Resumability: a cell is finished when its ``summary.json`` exists (written atomically,
last). Re-running the same command on the same output directory skips finished cells
and re-runs any cell that was interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedkt.checkpoint import SERVER_FILE, checkpoint_dir
from fedkt.config import ExperimentConfig, _format_error, apply_overrides, build_config, read_yaml
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.results import atomic_write


class CompareConfig(BaseModel):
    """A comparison matrix. ``base`` is an experiment (a mapping, a YAML path relative to
    the comparison file, or "default"); ``set`` overrides it for every cell."""

    model_config = ConfigDict(extra="forbid")

    name: str = "compare"
    base: str | dict[str, Any] = "default"
    set: list[str] = Field(default_factory=list)
    strategies: list[str | dict[str, Any]] = Field(min_length=1)
    partitions: list[dict[str, Any]] = Field(default_factory=lambda: [dict[str, Any]()])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be >= 0")
        return seeds


@dataclass(frozen=True)
class Cell:
    strategy: str
    partition: str
    seed: int
    config: ExperimentConfig

    @property
    def key(self) -> str:
        return f"{self.strategy}/{self.partition}/seed-{self.seed}"


def _strategy_label(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    if "label" in spec:
        return str(spec["label"])
    parts = [str(spec.get("name", "?"))] + [str(spec[k]) for k in ("fusion", "loss") if spec.get(k)]
    return "+".join(parts)


def _partition_label(p: dict[str, Any], resolved: ExperimentConfig) -> str:
    if "label" in p:
        return str(p["label"])
    part = resolved.partition
    detail = {
        "dirichlet": f"alpha={part.alpha:g}",
        "quantity_skew": f"alpha={part.alpha:g}",
        "pathological": f"classes={part.classes_per_client}",
        "iid": "",
    }[part.name]
    return f"{part.name}" + (f"-{detail}" if detail else "")


def load_compare(
    path: str | Path | None, overrides: list[str] | None = None
) -> tuple[CompareConfig, list[Cell]]:
    """Read a comparison file (or the built-in default) and expand it into cells."""
    if path is None:
        raw: dict[str, Any] = dict(DEFAULT_COMPARISON)
        root = Path.cwd()
    else:
        raw = read_yaml(path)
        root = Path(path).resolve().parent
    try:
        comp = CompareConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'default comparison'}: {_format_error(exc)}") from None
    if isinstance(comp.base, dict):
        base = comp.base
    elif comp.base == "default":
        base = {}
    else:
        base_path = Path(comp.base) if Path(comp.base).is_absolute() else root / comp.base
        base = read_yaml(base_path)
    all_overrides = [*comp.set, *(overrides or [])]
    for text in all_overrides:
        key = text.partition("=")[0].strip()
        if (
            key == "seed"
            or key == "strategy"
            or (key.startswith("strategy.") and key != "strategy.temperature")
        ):
            raise ConfigError(
                f"set {text!r}: {key} is decided per cell by the comparison's "
                f"{'seeds' if key == 'seed' else 'strategies'}; put it there"
            )
    base = apply_overrides(base, all_overrides)
    base_strategy: dict[str, Any] = (
        base["strategy"] if isinstance(base.get("strategy"), dict) else {}
    )
    shared_strategy = {k: v for k, v in base_strategy.items() if k == "temperature"}
    cells = []
    labels: dict[str, tuple] = {}
    for strategy in comp.strategies:
        s_label = _strategy_label(strategy)
        for part in comp.partitions:
            for seed in comp.seeds:
                raw_cell = dict(base)
                own = (
                    {"name": strategy}
                    if isinstance(strategy, str)
                    else {k: v for k, v in strategy.items() if k != "label"}
                )
                raw_cell["strategy"] = {**shared_strategy, **own}
                raw_cell["partition"] = {
                    **(base.get("partition") or {}),
                    **{k: v for k, v in part.items() if k != "label"},
                }
                raw_cell["seed"] = seed
                cfg = build_config(raw_cell)
                resolve(cfg)  # every cell's strategy, parts and models are checked up front
                p_label = _partition_label(part, cfg)
                cfg = cfg.model_copy(update={"name": f"{comp.name}-{s_label}-{p_label}-seed{seed}"})
                cell = Cell(s_label, p_label, seed, cfg)
                if cell.key in labels:
                    raise ConfigError(
                        f"two cells are both labelled {cell.key}; give strategies or partitions a "
                        "'label'"
                    )
                labels[cell.key] = ()
                cells.append(cell)
    return comp, cells


def _safe(label: str) -> str:
    """A file-name-safe label; distinct labels stay distinct (a short hash when altered)."""
    import hashlib

    safe = "".join(ch if ch.isalnum() or ch in "-_.=+" else "_" for ch in label)
    return safe if safe == label else f"{safe}-{hashlib.sha1(label.encode()).hexdigest()[:6]}"


def _cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / _safe(cell.strategy) / _safe(cell.partition) / f"seed-{cell.seed}"


def run_compare(
    comp: CompareConfig,
    cells: list[Cell],
    out: Path,
    run_cell: Callable[[ExperimentConfig, Path], dict[str, Any]],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every unfinished cell with ``run_cell`` and write the report. A cell
    interrupted after a round checkpoint keeps its directory; ``run_cell`` should resume
    it (see :func:`cell_resumable`)."""
    out.mkdir(parents=True, exist_ok=True)
    # The plan holds every cell's fully resolved config: resuming with other overrides or an
    # edited base file is refused instead of silently mixing old and new cells.
    plan = {
        "compare": json.loads(comp.model_dump_json()),
        "cells": {c.key: json.loads(c.config.to_json()) for c in cells},
    }
    plan_file = out / "compare.json"
    if plan_file.exists():
        previous = json.loads(plan_file.read_text())
        if previous != plan:
            raise ConfigError(f"{out} holds a different comparison; use another --out or delete it")
    else:
        atomic_write(plan_file, json.dumps(plan, indent=2))
    done = 0
    # Seed-major order: a comparison stopped part-way holds complete seeds (every strategy
    # and partition under the same seeds), which is what a fair partial report needs.
    order = sorted(cells, key=lambda c: comp.seeds.index(c.seed))
    for i, cell in enumerate(order, 1):
        cdir = _cell_dir(out, cell)
        if (cdir / "summary.json").exists():
            done += 1
            continue
        if cdir.exists() and not (checkpoint_dir(cdir) / SERVER_FILE).exists():
            shutil.rmtree(cdir)  # interrupted before its first round: restart it from scratch
        # (a cell with a round checkpoint is kept: run_cell resumes it)
        log(f"[{i}/{len(cells)}] {cell.key}")
        run_cell(cell.config, cdir)
    log(f"{len(cells) - done} cells run, {done} already finished")
    return write_report(comp, cells, out)


def cell_resumable(cdir: Path) -> bool:
    """Whether a cell directory holds a round checkpoint to continue from."""
    return (checkpoint_dir(cdir) / SERVER_FILE).exists()


# ------------------------------------------------------------------ reporting


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the t-based confidence interval); NaN when n < 2."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if len(arr) == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, math.nan, math.nan
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(arr) - 1) * std / math.sqrt(len(arr)))
    return mean, std, half


def _load_cell(out: Path, cell: Cell) -> dict[str, Any] | None:
    cdir = _cell_dir(out, cell)
    if not (cdir / "summary.json").exists():
        return None
    summary = json.loads((cdir / "summary.json").read_text())
    rows = [json.loads(x) for x in (cdir / "metrics.jsonl").read_text().splitlines()]
    last = max((r["round"] for r in rows), default=0)
    summary["client_accuracies"] = [
        r.get("accuracy") for r in rows if r["round"] == last and r.get("accuracy") is not None
    ]
    return summary


def _fmt(mean: float, std: float | None = None, pct: bool = True) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    scale = 100 if pct else 1
    if std is None or not math.isfinite(std):
        return f"{scale * mean:.1f}"
    return f"{scale * mean:.1f} ± {scale * std:.1f}"


def write_report(comp: CompareConfig, cells: list[Cell], out: Path) -> dict[str, Any]:
    """results.csv (one row per cell), report.md and the plots, from the cells' results."""
    from fedkt import plots

    results = {c.key: _load_cell(out, c) for c in cells}
    fields = [
        "strategy",
        "partition",
        "seed",
        "alma",
        "global_accuracy",
        "worst_client_accuracy",
        "best_alma",
        "bytes_up",
        "bytes_down",
        "rounds",
        "wall_seconds",
        "fusion",
        "loss",
        "knowledge",
        "honest_alma",
    ]
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for c in cells:
            row = results[c.key]
            if row is not None:
                writer.writerow(
                    {
                        "strategy": c.strategy,
                        "partition": c.partition,
                        "seed": c.seed,
                        **{k: row.get(k) for k in fields[3:]},
                    }
                )
    tmp.replace(out / "results.csv")

    strategies = list(dict.fromkeys(c.strategy for c in cells))
    partitions = list(dict.fromkeys(c.partition for c in cells))
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for p in partitions:
        for s in strategies:
            runs = [
                r
                for c in cells
                if c.strategy == s and c.partition == p and (r := results[c.key]) is not None
            ]
            alma = confidence_interval([r["alma"] for r in runs])
            per_round = [r["alma_per_round"] for r in runs]
            table.setdefault(p, {})[s] = {
                "n": len(runs),
                "alma": alma,
                "global": confidence_interval([r["global_accuracy"] for r in runs]),
                "worst": confidence_interval([r["worst_client_accuracy"] for r in runs]),
                "mbytes": float(np.mean([(r["bytes_up"] + r["bytes_down"]) / 1e6 for r in runs]))
                if runs
                else math.nan,
                "wall": float(np.mean([r["wall_seconds"] for r in runs])) if runs else math.nan,
                "alma_per_round": (
                    np.nanmean(
                        np.array(
                            [[np.nan if a is None else a for a in pr] for pr in per_round],
                            dtype=float,
                        ),
                        axis=0,
                    ).tolist()
                    if per_round
                    else []
                ),
                "client_accuracies": [a for r in runs for a in r["client_accuracies"]],
            }

    missing = sum(v is None for v in results.values())
    lines = [
        f"# Comparison: {comp.name}",
        "",
        f"{len(strategies)} strategies x {len(partitions)} partition settings x {len(comp.seeds)} "
        "seeds "
        f"(seeds {', '.join(map(str, comp.seeds))}); {len(cells) - missing}/{len(cells)} cells "
        "finished.",
        "Under one seed every strategy sees the same partitions, transfer set, client samples and "
        "initial models.",
        "ALMA: mean over clients of each client's accuracy on a test split with its own label "
        "distribution, final round.",
        "Values are mean ± std over seeds in %; CI95 is the half-width of the t-based 95% "
        "confidence interval.",
        "",
    ]
    for p in partitions:
        lines += [
            f"## {p}",
            "",
            "| strategy | ALMA | CI95 | global acc. | worst client | MB / run | s / run | seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ranked = sorted(
            strategies,
            key=lambda s: (
                -(table[p][s]["alma"][0] if math.isfinite(table[p][s]["alma"][0]) else -1)
            ),
        )
        for s in ranked:
            t = table[p][s]
            ci = f"± {100 * t['alma'][2]:.1f}" if math.isfinite(t["alma"][2]) else "-"
            lines.append(
                f"| {s} | {_fmt(t['alma'][0], t['alma'][1])} | {ci} | "
                f"{_fmt(t['global'][0], t['global'][1])} | "
                f"{_fmt(t['worst'][0], t['worst'][1])} | {t['mbytes']:.2f} | {t['wall']:.1f} | "
                f"{t['n']} |"
            )
        lines.append("")
    lines += [
        "## Figures",
        "",
        "![final ALMA](final_alma.png)",
        "",
        "![ALMA per round](alma_per_round.png)",
        "",
        "![ALMA vs bytes](alma_vs_bytes.png)",
        "",
        "![per-client accuracy](client_spread.png)",
        "",
        "Per-cell results (config, metrics, plots) are under "
        "`cells/<strategy>/<partition>/seed-<k>/`; all cells in `results.csv`.",
        "",
    ]
    atomic_write(out / "report.md", "\n".join(lines))
    plots.compare_final(table, strategies, partitions, out / "final_alma.png")
    plots.compare_rounds(table, strategies, partitions, out / "alma_per_round.png")
    plots.compare_bytes(table, strategies, partitions, out / "alma_vs_bytes.png")
    plots.compare_spread(table, strategies, partitions, out / "client_spread.png")
    return {"cells": len(cells), "finished": len(cells) - missing, "table": table}


DEFAULT_COMPARISON: dict[str, Any] = yaml.safe_load(
    """
name: default
base: default
set: [rounds=5]
strategies: [local, fedavg, fedprox, fedadam, feddf, fkd, fedmd, fd, dsfl, fedproto, knfu]
partitions:
  - {name: dirichlet, alpha: 0.1}
  - {name: dirichlet, alpha: 1.0}
seeds: [0, 1]
"""
)
