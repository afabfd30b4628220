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

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedkt.checkpoint import SERVER_FILE, checkpoint_dir
from fedkt.config import (
    ExperimentConfig,
    _format_error,
    apply_overrides,
    build_config,
    load_config,
    read_yaml,
)
from fedkt.data.layout import prepare_layouts
from fedkt.errors import ConfigError, FedktError, ResultsError
from fedkt.experiment import resolve
from fedkt.parallel import CellTask
from fedkt.provenance import run_provenance
from fedkt.report import CellResult, confidence_interval, markdown, summarise
from fedkt.results import atomic_write, read_json
from fedkt.tuning import Trial, TuneConfig, choose, trials, with_values

__all__ = [
    "Cell",
    "CompareConfig",
    "confidence_interval",
    "load_compare",
    "run_compare",
    "write_report",
]


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
    budget: Literal["equal", "own"] = Field(
        "equal",
        description="equal: every strategy takes the same optimiser steps per round in its "
        "exchange phase (distill.steps, from distill.epochs over the transfer set); own: each "
        "strategy its own epochs",
    )
    margin: float = Field(0.01, ge=0, lt=1, description="non-inferiority margin of the verdicts")
    flag_margin: float = Field(
        0.05, ge=0, lt=1, description="flag a strategy ending this far below its local_alma"
    )
    reference: str = Field(
        "local", description="the strategy every other is compared with, paired by seed"
    )
    tune: TuneConfig | None = Field(
        None, description="grids tuned on validation data before the test seeds run (fedkt.tuning)"
    )

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
                if comp.budget == "equal" and cfg.distill.steps is None:
                    cfg = cfg.model_copy(
                        update={
                            "distill": cfg.distill.model_copy(
                                update={"steps": exchange_budget(cfg)}
                            )
                        }
                    )
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
    if comp.tune is not None:
        trials(comp.tune, cells)  # every combination is checked up front
    return comp, cells


def exchange_budget(cfg: ExperimentConfig) -> int:
    """The equal budget: the optimiser steps that distilling for ``distill.epochs`` over
    the whole transfer set (every view) takes; every strategy then spends exactly these
    steps per round in its exchange phase."""
    rows = cfg.transfer.size * cfg.transfer.views
    return cfg.distill.epochs * math.ceil(rows / cfg.distill.batch_size)


def _alma(path: Path) -> float | None:
    """A finished run's ALMA, from its summary.json at ``path``."""
    summary = read_json(path)
    alma = summary.get("alma") if isinstance(summary, dict) else "missing"
    if alma is not None and not isinstance(alma, (int, float)):
        raise ResultsError(f"{path}: no numeric alma ({alma!r})")
    return alma


def _safe(label: str) -> str:
    """A file-name-safe label; distinct labels stay distinct (a short hash when altered)."""
    import hashlib

    safe = "".join(ch if ch.isalnum() or ch in "-_.=+" else "_" for ch in label)
    return safe if safe == label else f"{safe}-{hashlib.sha1(label.encode()).hexdigest()[:6]}"


def _cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / _safe(cell.strategy) / _safe(cell.partition) / f"seed-{cell.seed}"


#: Config fields that do not change a run's numbers (a label; where metrics are served).
#: Config sections that change where a run runs or how it is watched, not its numbers (a
#: cell gives identical results on one machine or a Ray cluster: tests/test_shared_engine.py).
PLACEMENT = ("monitoring", "simulation")
RESULT_NEUTRAL = ("name", *PLACEMENT)
REUSED_FILE = "reused_from.txt"


def _without(cfg: ExperimentConfig, fields: Sequence[str]) -> dict[str, Any]:
    """``cfg`` as JSON data without ``fields``."""
    data = json.loads(cfg.to_json())
    for name in fields:
        data.pop(name, None)
    return data


def result_key(cfg: ExperimentConfig) -> str:
    """Identifies a run's numbers: its resolved config without :data:`RESULT_NEUTRAL`
    fields, the code that runs it and the kernels it runs on
    (:func:`fedkt.provenance.run_provenance`)."""
    data = {**_without(cfg, RESULT_NEUTRAL), **run_provenance(tuple(cfg.plugins), cfg.device)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def finished_runs(
    dirs: Sequence[Path], log: Callable[[str], None] = lambda message: None
) -> dict[str, Path]:
    """Finished runs anywhere under ``dirs`` (comparison cells, tuning trials, single
    runs), by :func:`result_key`. A run counts only if its summary names the code that
    would run it now, and kernels of this machine's kind: results of an older protocol
    are never reused, nor those of a machine that rounds differently (``log`` says how
    many of those were passed over, as they would otherwise look reusable)."""
    found: dict[str, Path] = {}
    elsewhere: Counter[tuple[str, str]] = Counter()
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError(f"--reuse: {folder} is not a directory")
        for summary_file in sorted(folder.rglob("summary.json")):
            run = summary_file.parent
            try:
                summary = json.loads(summary_file.read_text())
                cfg = load_config(run / "config.yaml")
            except (OSError, ValueError, FedktError):
                continue  # not a fedkt run, or one this version cannot read: never reused
            if not isinstance(summary, dict):
                continue
            here = run_provenance(tuple(cfg.plugins), cfg.device)
            if summary.get("code") != here["code"]:
                continue
            if summary.get("kernels") != here["kernels"]:
                elsewhere[(str(summary.get("kernels") or "not recorded"), here["kernels"])] += 1
                continue
            found.setdefault(result_key(cfg), run)
    for (theirs, ours), n in elsewhere.items():
        log(
            f"--reuse: {n} finished run(s) of this code were computed on other kernels "
            f"({theirs}; here: {ours}) and are run again: another kind of machine may "
            "round differently"
        )
    return found


def _reuse(source: Path, cdir: Path) -> None:
    """Copy a finished run as this cell (same numbers: same config, seed and code)."""
    if cdir.exists():
        shutil.rmtree(cdir)
    shutil.copytree(source, cdir, ignore=shutil.ignore_patterns("checkpoint"))
    (cdir / REUSED_FILE).write_text(f"{source.resolve()}\n")


#: Runs a batch of cells (in order, or in parallel jobs: :mod:`fedkt.parallel`) and
#: returns when every one has its summary.json.
RunCells = Callable[[Sequence[CellTask]], None]


def run_compare(
    comp: CompareConfig,
    cells: list[Cell],
    out: Path,
    run_cells: RunCells,
    log: Callable[[str], None] = print,
    reuse: Sequence[Path] = (),
    engine: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Run every unfinished cell with ``run_cells`` and write the report. A cell
    interrupted after a round checkpoint keeps its directory and its task says
    ``resume``. A cell whose run already finished under ``reuse`` (same
    :func:`result_key`) is copied from there instead of being run again. ``engine()``
    is held while cells (tuning trials included) run and closed before the report is
    drawn: a shared simulation engine's workers are gone by then (0.62 GiB of a
    2-worker engine, measured at the end of the default comparison)."""
    out.mkdir(parents=True, exist_ok=True)
    # The plan holds every cell's fully resolved config: resuming with other overrides or an
    # edited base file is refused instead of silently mixing old and new cells.
    plan = {
        "compare": json.loads(comp.model_dump_json()),
        "cells": {c.key: _without(c.config, PLACEMENT) for c in cells},
    }
    plan_file = out / "compare.json"
    if plan_file.exists():
        previous = read_json(plan_file)
        if previous != plan:
            raise ConfigError(f"{out} holds a different comparison; use another --out or delete it")
    else:
        atomic_write(plan_file, json.dumps(plan, indent=2))
    finished = finished_runs(reuse, log) if reuse else {}
    counts = {"run": 0, "reused": 0}

    def run_or_reuse(tasks: list[CellTask]) -> None:
        """Reuse what ``reuse`` holds, run the rest; tasks whose summary exists are skipped."""
        todo = []
        for task in tasks:
            if (task.cdir / "summary.json").exists():
                continue
            resumable = cell_resumable(task.cdir)
            if task.cdir.exists() and not resumable:
                shutil.rmtree(task.cdir)  # interrupted before its first round: start afresh
            source = finished.get(result_key(task.config)) if finished else None
            if source is not None and not resumable:
                _reuse(source, task.cdir)
                log(f"{task.label()}: reused from {source}")
                counts["reused"] += 1
                continue
            todo.append(dataclasses.replace(task, resume=resumable))
        # every cell's data layout, derived in one process apart before the cells start
        prepare_layouts([task.config for task in todo])
        run_cells(todo)
        counts["run"] += len(todo)

    with engine():
        if comp.tune is not None:
            chosen = _tune(comp.tune, cells, out, run_or_reuse)
            cells = [
                dataclasses.replace(
                    c,
                    config=with_values(c.config, chosen[(c.strategy, c.partition)]["values"] or ()),
                )
                for c in cells
            ]
        # Tuning trials are counted apart from the test cells: the closing line's "already
        # finished" is test cells only.
        trials = dict(counts)
        counts.update(run=0, reused=0)
        # Seed-major order: a comparison stopped part-way holds complete seeds (every
        # strategy and partition under the same seeds), which is what a fair partial
        # report needs.
        order = sorted(cells, key=lambda c: comp.seeds.index(c.seed))
        run_or_reuse(
            [
                CellTask(cell.config, _cell_dir(out, cell), cell.key, f"[{i}/{len(cells)}]")
                for i, cell in enumerate(order, 1)
            ]
        )
    done = len(cells) - counts["run"] - counts["reused"]
    tuning = (
        f"tuning: {trials['run']} trials run, {trials['reused']} reused; "
        if comp.tune is not None
        else ""
    )
    reused = f", {counts['reused']} reused" if reuse else ""
    log(f"{tuning}{counts['run']} cells run{reused}, {done} already finished")
    return write_report(comp, cells, out)


def run_in_order(run_cell: Callable[[CellTask], Any], log: Callable[[str], None]) -> RunCells:
    """A :data:`RunCells` running one cell after another with ``run_cell``."""

    def run_cells(tasks: Sequence[CellTask]) -> None:
        for task in tasks:
            log(task.label())
            run_cell(task)

    return run_cells


def _tune(
    tune: TuneConfig,
    cells: list[Cell],
    out: Path,
    run: Callable[[list[CellTask]], None],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Run every tuning trial (resumable, under ``out/tuning``) on validation data and
    choose each strategy's values per partition setting; writes ``tuning.json``."""
    todo = trials(tune, cells)
    tasks = []
    for i, trial in enumerate(todo, 1):
        tdir = out / "tuning" / _safe(trial.strategy) / _safe(trial.partition) / _safe(trial.label)
        what = f"{trial.strategy}/{trial.partition} {trial.label}, seed {trial.seed}"
        tasks.append(
            CellTask(trial.config, tdir / f"seed-{trial.seed}", what, f"[tune {i}/{len(todo)}]")
        )
    run(tasks)
    done: list[tuple[Trial, float | None]] = [
        (trial, _alma(task.cdir / "summary.json")) for trial, task in zip(todo, tasks, strict=True)
    ]
    chosen = choose(done)
    record = [
        {
            "strategy": s,
            "partition": p,
            "chosen": dict(entry["values"] or ()),
            "validation_alma": entry["best"],
            "scores": entry["scores"],
            "seeds": tune.seeds,
        }
        for (s, p), entry in chosen.items()
    ]
    atomic_write(out / "tuning.json", json.dumps(record, indent=2))
    return chosen


def cell_resumable(cdir: Path) -> bool:
    """Whether a cell directory holds a round checkpoint to continue from."""
    return (checkpoint_dir(cdir) / SERVER_FILE).exists()


# ------------------------------------------------------------------ reporting

CSV_FIELDS = [
    "strategy", "partition", "seed", "alma", "local_alma", "global_accuracy",
    "worst_client_accuracy", "best_alma", "steps_per_round", "exchange_budget", "bytes_up",
    "bytes_down", "rounds", "wall_seconds", "fusion", "loss", "knowledge", "honest_alma",
]  # fmt: skip


def tuning_markdown(record: list[dict[str, Any]], tune: TuneConfig | None) -> str:
    """The report's section on the values tuning chose."""
    where = (
        f" ({100 * tune.validation_fraction:g}%, tuning seeds {', '.join(map(str, tune.seeds))})"
        if tune
        else ""
    )
    lines = [
        "",
        "## Tuned values",
        "",
        "Chosen per strategy and partition setting by mean ALMA on validation data held out of "
        f"each client's training data{where}; the test split was never used for a choice. "
        + (
            "Trials ran with the cells' faults (`tune.under_faults`). "
            if tune and tune.under_faults
            else "Trials ran fault-free (no attackers, stragglers or dropouts). "
        )
        + "All trials' scores: `tuning.json`.",
        "",
        "| strategy | partition | chosen | validation ALMA | next best | combinations |",
        "|---|---|---|---|---|---|",
    ]
    for r in record:
        chosen = _values_text(r["chosen"])
        best = "-" if r["validation_alma"] is None else f"{100 * r['validation_alma']:.1f}"
        lines.append(
            f"| {r['strategy']} | {r['partition']} | {chosen} | {best} | {_runner_up(r)} "
            f"| {len(r['scores'])} |"
        )
    return "\n".join(lines) + "\n"


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "defaults"


def _runner_up(record: dict[str, Any]) -> str:
    """The second-best combination and its validation ALMA: a choice won by a tenth of a
    point on few tuning seeds is a coin toss, and the reader should see that it was."""
    scored = sorted(
        (s for s in record["scores"] if s.get("validation_alma") is not None),
        key=lambda s: -s["validation_alma"],
    )
    if len(scored) < 2:
        return "-"
    return f"{_values_text(scored[1]['values'])}: {100 * scored[1]['validation_alma']:.1f}"


def _num_classes(cfg: ExperimentConfig) -> int:
    from fedkt.data.sources import describe

    return describe(cfg).num_classes


def provenance_markdown(summaries: list[dict[str, Any]]) -> str:
    """The report's note on which code computed the cells: a comparison resumed across a
    code change holds cells of two protocols, and the reader must be told."""
    codes = Counter(str(s.get("code") or "unknown") for s in summaries)
    if not codes:
        return ""
    kernels = Counter(str(s.get("kernels") or "not recorded") for s in summaries)
    one_kind = len(kernels) == 1
    if len(codes) == 1:
        code = next(iter(codes))
        text = f"\n\nEvery cell was computed by the same code (digest `{code[:12]}`)"
        text += f" on the same kernels (`{next(iter(kernels))}`).\n" if one_kind else ".\n"
    else:
        parts = ", ".join(f"`{c[:12]}` ({n} cells)" for c, n in codes.most_common())
        text = (
            f"\n\n**Warning:** the cells were computed by {len(codes)} different versions of "
            f"the code ({parts}): the comparison was resumed across a code change. Rerun it in "
            "a fresh folder (`--reuse` copies the cells that still match) before reading the "
            "numbers.\n"
        )
        if one_kind:
            text += f"\nEvery cell ran on the same kernels (`{next(iter(kernels))}`).\n"
    if one_kind:
        return text
    parts = ", ".join(f"`{k}` ({n} cells)" for k, n in kernels.most_common())
    return (
        f"{text}\n**Warning:** the cells ran on {len(kernels)} kinds of kernels ({parts}): "
        "the comparison was resumed or extended on another kind of machine (or its clients "
        "ran on machines of other kinds), whose arithmetic may round differently, so a seed's "
        "cells of two strategies may not be paired on equal terms. Rerun it on one kind of "
        "machine before reading small differences.\n"
    )


def write_report(comp: CompareConfig, cells: list[Cell], out: Path) -> dict[str, Any]:
    """results.csv (one row per cell), report.md and the figures, from the cells' results."""
    from fedkt import plots

    loaded = {
        c.key: CellResult.load(
            _cell_dir(out, c), c.strategy, c.partition, c.seed, _num_classes(c.config)
        )
        for c in cells
    }
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for c in cells:
            result = loaded[c.key]
            if result is not None:
                row = {"strategy": c.strategy, "partition": c.partition, "seed": c.seed}
                writer.writerow({**row, **{k: result.summary.get(k) for k in CSV_FIELDS[3:]}})
    tmp.replace(out / "results.csv")

    finished = [r for r in loaded.values() if r is not None]
    table = summarise(finished, comp.margin, comp.flag_margin, comp.reference)
    budgets = {c.config.distill.steps for c in cells}
    text = markdown(
        comp.name,
        table,
        comp.seeds,
        len(finished),
        len(cells),
        comp.margin,
        comp.flag_margin,
        budgets.pop() if len(budgets) == 1 else None,
        comp.reference,
    )
    if (out / "tuning.json").exists():
        text += tuning_markdown(read_json(out / "tuning.json"), comp.tune)
    text += provenance_markdown([r.summary for r in finished])
    atomic_write(out / "report.md", text)
    if finished:
        chance = 1.0 / finished[0].num_classes
        plots.compare_final(table, out / "final_alma", chance)
        plots.compare_rounds(table, out / "alma_per_round")
        plots.compare_bytes(table, out / "alma_vs_bytes")
        plots.compare_spread(table, out / "client_spread", chance)
        plots.compare_fusion(table, out / "fusion_weights")
    return {"cells": len(cells), "finished": len(finished), "table": table}


DEFAULT_COMPARISON: dict[str, Any] = yaml.safe_load(
    """
name: default
base: default
set: [rounds=5]
strategies: [local, fedavg, fedprox, fedadam, feddf, fkd, fedmd, fd, dsfl, fedproto, knfu]
partitions:
  - {name: dirichlet, alpha: 0.1}
  - {name: dirichlet, alpha: 1.0}
seeds: [0, 1, 2, 3, 4]
tune:
  seeds: [1000]
  grid:
    local: {train.lr: [0.05, 0.01]}
    fedavg: {train.lr: [0.05, 0.01]}
    fedprox: {train.lr: [0.05, 0.01]}
    fedadam: {train.lr: [0.05, 0.01]}
    feddf: {train.lr: [0.05, 0.01]}
    fkd: {distill.lr: [0.05, 0.01]}
    fedmd: {distill.lr: [0.05, 0.01]}
    fd: {distill.lr: [0.05, 0.01]}
    dsfl: {distill.lr: [0.05, 0.01]}
    fedproto: {distill.lr: [0.05, 0.01]}
    knfu: {distill.lr: [0.05, 0.01], strategy.fusion_params.beta: [1.0, 3.0, 10.0]}
"""
)
