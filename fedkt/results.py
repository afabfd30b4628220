"""A run's results directory, written as the run goes so nothing computed is lost.

Layout::

    config.yaml          the fully resolved config (re-runnable with `fedkt run`)
    metrics.jsonl        one line per round per client (deterministic: no timings)
    rounds.jsonl         one line per round: ALMA, bytes, participation, wall time
    fusion_weights.jsonl one line per round: the round's participants and their k x k
                         fusion weights (row n: whom client n learned from)
    kernels.json         the kernels this process computed on, by span of rounds (a run
                         resumed on another kind of machine has two)
    summary.json         final figures, the code digest and the kernels (written
                         atomically at the end)
    accuracy.png         ALMA / global / worst-client accuracy per round
    fusion_weights.png   heat map of the last round's fusion weights (when fused)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fedkt.config import ExperimentConfig
from fedkt.errors import ResultsError
from fedkt.experiment import Experiment
from fedkt.provenance import run_provenance
from fedkt.rounds import RoundRecord
from fedkt.textfiles import read_text


def default_out_dir(cfg: ExperimentConfig, base: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<date>-<name>/``; a time and then a counter keep repeated runs apart."""
    now = _dt.datetime.now()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-") or "run"
    path = Path(base) / f"{now:%Y-%m-%d}-{slug}"
    if not path.exists():
        return path
    path = Path(base) / f"{now:%Y-%m-%d-%H%M%S}-{slug}"
    n = 2
    while path.exists():
        path = Path(base) / f"{now:%Y-%m-%d-%H%M%S}-{slug}-{n}"
        n += 1
    return path


#: The kernels a run's rounds ran on, by span of rounds (see ``ResultsWriter``).
KERNELS_FILE = "kernels.json"


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file + rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    return value


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def read_json(path: Path) -> Any:
    """A JSON file of a results directory; anything else is a one-line
    :class:`ResultsError` naming the file."""
    try:
        return json.loads(read_text(path, ResultsError, "JSON text file"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file of a results directory (one object per line), as
    :func:`read_json`."""
    text = read_text(path, ResultsError, "JSON-lines text file")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ResultsError(f"{path}, line {number}: not a JSON object")
        rows.append(row)
    return rows


def _round_of(line: str) -> int | None:
    """The round of a results line; None for a line cut short by a kill."""
    try:
        return int(json.loads(line)["round"])
    except (ValueError, KeyError, TypeError):
        return None


def read_fusion_weights(out_dir: str | os.PathLike[str]) -> dict[int, tuple[list[int], np.ndarray]]:
    """A run's fusion weights: round -> (participants' partition ids, k x k weights)."""
    path = Path(out_dir) / "fusion_weights.jsonl"
    if not path.exists():
        return {}
    rows = read_json_lines(path)
    try:
        return dict(_fusion_record(row) for row in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(
            f"{path}: not fedkt's fusion weights ({type(exc).__name__}: {exc})"
        ) from None


def _fusion_record(rec: dict[str, Any]) -> tuple[int, tuple[list[int], np.ndarray]]:
    return int(rec["round"]), (
        [int(c) for c in rec["clients"]],
        np.array(rec["weights"], dtype=float),
    )


def _last_fusion(lines: list[str], path: Path) -> tuple[int, list[int], np.ndarray] | None:
    """The last round's fusion weights among the lines of ``path`` (round, participants,
    k x k weights), None when there are none; only that line is parsed, since every
    round's k x k weights can be large. A line that is not fedkt's is one ResultsError."""
    if not lines:
        return None
    try:
        r, (clients, weights) = _fusion_record(json.loads(lines[-1]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(
            f"{path}: not fedkt's fusion weights ({type(exc).__name__}: {exc})"
        ) from None
    return r, clients, weights


def client_steps(row: dict[str, Any]) -> float | None:
    """Optimiser steps a client took in a round: local training, the exchange phase
    (distillation, FedMD's revisit, or a budget's extra local training), the teacher's
    lesson to a student, pre-training. None when the row reports none."""
    counts = [v for k, v in row.items() if k.endswith("_steps") and v is not None]
    return float(sum(counts)) if counts else None


class ResultsWriter:
    """Appends per-round results and writes the summary and plots at the end."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        exp: Experiment,
        resume_round: int = 0,
        plots: bool = True,
    ) -> None:
        """A fresh results directory, or (``resume_round`` = k > 0) the existing one with
        everything recorded after round k dropped: a run killed between writing round
        k + 1 and checkpointing it repeats that round exactly. ``plots``: draw the run's
        figures at the end (a comparison's cells skip them: its report draws its own, and
        drawing took about a tenth of a small cell's CPU time)."""
        self.plots = plots
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exp = exp
        self.cfg = cfg = exp.config
        self.rounds: list[RoundRecord] = []
        # Only the last round's fusion weights stay in memory (for the heat map); all
        # rounds are in fusion_weights.jsonl.
        self.last_weights: tuple[int, list[int], np.ndarray] | None = None
        self.attackers = exp.attackers
        # Which code and kernels compute this run, taken as it starts: the source files are
        # hashed as they are on disk, and an edit made while the run goes must not be
        # credited with its numbers (code_digest is cached per process from then on).
        self.provenance = run_provenance(tuple(cfg.plugins), cfg.device)
        self.here = self.provenance["kernels"]  # this process's; by span of rounds below
        self.provenance["kernels"] = self._kernels_by_round(self.here, resume_round)
        self.client_kernels: dict[int, str] = {}  # partition -> what its client computes on
        atomic_write(self.dir / "config.yaml", cfg.to_yaml())
        kept: dict[str, list[str]] = {
            "metrics.jsonl": [],
            "rounds.jsonl": [],
            "fusion_weights.jsonl": [],
        }
        if resume_round > 0:
            for name in kept:
                path = self.dir / name
                lines = path.read_text().splitlines() if path.exists() else []
                kept[name] = [
                    line for line in lines if (_round_of(line) or resume_round + 1) <= resume_round
                ]
            try:
                self.rounds = [
                    RoundRecord.from_dict(json.loads(line)) for line in kept["rounds.jsonl"]
                ]
            except (TypeError, ValueError, AttributeError) as exc:
                raise ResultsError(
                    f"{self.dir / 'rounds.jsonl'}: not fedkt's rounds ({exc})"
                ) from None
            last = _last_fusion(kept["fusion_weights.jsonl"], self.dir / "fusion_weights.jsonl")
            if last is not None:
                self.last_weights = last
        for name, lines in kept.items():
            if name == "fusion_weights.jsonl" and not lines:
                (self.dir / name).unlink(missing_ok=True)  # exists only for strategies that fuse
                continue
            atomic_write(self.dir / name, "".join(line + "\n" for line in lines))

    def _kernels_by_round(self, here: str, resume_round: int) -> str:
        """The kernels this run's rounds ran on, kept in :data:`KERNELS_FILE` as
        ``[first round, identity]`` spans: a run resumed on another kind of machine has
        rounds of two, and its summary must say so (``"A (from round 1) | B (from round
        k + 1)"``), so that it is never reused as a run of either kind and its report warns.
        A run begun before spans were kept has its first rounds' kernels "not recorded"."""
        path = self.dir / KERNELS_FILE
        spans: list[list[Any]] = []
        if resume_round > 0:
            kept = read_json(path) if path.exists() else [[1, "not recorded"]]
            if (
                not isinstance(kept, list)
                or not kept
                or not all(
                    isinstance(x, list)
                    and len(x) == 2
                    and type(x[0]) is int
                    and isinstance(x[1], str)
                    for x in kept
                )
                or kept[0][0] != 1
            ):
                raise ResultsError(
                    f"{path}: not fedkt's kernel spans ([first round, kernels], from round 1)"
                )
            spans = [span for span in kept if span[0] <= resume_round]
        # a run stopped after its last round's checkpoint computes nothing more when resumed
        if (not spans or spans[-1][1] != here) and resume_round < self.cfg.rounds:
            spans.append([resume_round + 1, here])
        atomic_write(path, json.dumps(spans))
        if len(spans) == 1:
            return str(spans[0][1])  # (resumed after its last round elsewhere: the first kind)
        return " | ".join(f"{kernels} (from round {first})" for first, kernels in spans)

    def clients_computed_on(self, kernels: dict[int, str]) -> None:
        """Record the kernels clients said in their handshake they compute on (partition ->
        :func:`fedkt.provenance.kernel_identity`): in a deployment or on a Ray cluster
        they are other machines than the one writing this summary."""
        self.client_kernels.update(kernels)

    def _kernels(self) -> str:
        """The summary's ``kernels``: this process's (by span of rounds), and the kinds of
        clients that computed on other kernels, if any; a run whose clients all ran here
        names this machine's kernels alone, so it matches a local rerun's."""
        others = Counter(k for k in self.client_kernels.values() if k != self.here)
        if not others:
            return self.provenance["kernels"]
        n = len(self.client_kernels)
        parts = " | ".join(f"{k} ({c} of {n} clients)" for k, c in sorted(others.items()))
        return f"{self.provenance['kernels']} | clients: {parts}"

    def add_round(
        self,
        record: RoundRecord,
        rows: list[dict[str, Any]],
        fusion: tuple[list[int], np.ndarray] | None = None,
    ) -> RoundRecord:
        """Record one round: ``record`` carries the round's participation, bytes and
        timing; the accuracies (ALMA, global, worst client, local_alma) are computed
        here from the per-client ``rows``. ``fusion``: the round's participants
        (partition ids) and their k x k fusion weights. Returns the completed record."""
        server_round = record.round
        rows = sorted(rows, key=lambda r: r["client"])
        with open(self.dir / "metrics.jsonl", "a") as fh:
            for row in rows:
                fh.write(
                    json.dumps({"round": server_round, **{k: _clean(v) for k, v in row.items()}})
                    + "\n"
                )
        accs = [
            r["accuracy"]
            for r in rows
            if r.get("accuracy") is not None and math.isfinite(r["accuracy"])
        ]
        record = dataclasses.replace(
            record,
            alma=_mean(accs),
            global_accuracy=_mean([r.get("global_accuracy") for r in rows]),
            worst_client_accuracy=float(min(accs)) if accs else None,
            local_alma=_mean([r.get("local_accuracy") for r in rows]),
            steps=_mean([client_steps(r) for r in rows]),
            participants=len(rows),
            attacked=bool(self.attackers),
            honest_alma=_mean(
                [r.get("accuracy") for r in rows if r["client"] not in self.attackers]
            )
            if self.attackers
            else None,
        )
        self.rounds.append(record)
        with open(self.dir / "rounds.jsonl", "a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.to_dict().items()}) + "\n")
        if fusion is not None:
            clients, weights = [int(c) for c in fusion[0]], np.asarray(fusion[1], dtype=float)
            line = {
                "round": server_round,
                "clients": clients,
                "weights": [[_clean(float(v)) for v in row] for row in weights],
            }
            with open(self.dir / "fusion_weights.jsonl", "a") as fh:
                fh.write(json.dumps(line) + "\n")
            self.last_weights = (server_round, clients, weights)
        return record

    def finish(self, wall_seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json and the plots; returns the summary."""
        counted = [r for r in self.rounds if r.alma is not None]
        last = dataclasses.asdict(counted[-1]) if counted else {}
        summary = {
            "name": self.cfg.name,
            "strategy": self.cfg.strategy.name,
            **self.exp.parts,
            "dataset": self.cfg.dataset,
            "num_clients": self.cfg.num_clients,
            "seed": self.cfg.seed,
            "rounds": len(self.rounds),
            "alma": last.get("alma"),
            "alma_round": last.get("round"),
            "global_accuracy": last.get("global_accuracy"),
            **(
                {
                    "honest_alma": last.get("honest_alma"),
                    "byzantine_clients": sorted(self.attackers),
                }
                if self.attackers
                else {}
            ),
            "worst_client_accuracy": last.get("worst_client_accuracy"),
            "local_alma": last.get("local_alma"),
            "steps_per_round": _mean([r.steps for r in self.rounds]),
            "exchange_budget": self.cfg.distill.steps,
            "best_alma": max((r.alma for r in counted if r.alma is not None), default=None),
            "alma_per_round": [r.alma for r in self.rounds],
            "bytes_up": int(sum(r.bytes_up for r in self.rounds)),
            "bytes_down": int(sum(r.bytes_down for r in self.rounds)),
            "wall_seconds": round(wall_seconds, 3),
            "code": self.provenance["code"],  # which code made these numbers, on which kernels
            "kernels": self._kernels(),
            **(extra or {}),
        }
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2))
        if self.plots:
            _draw(self.dir, self.cfg.name, self.rounds, self.last_weights)
        return summary


def draw_plots(out_dir: str | os.PathLike[str], title: str) -> None:
    """Draw a finished run's figures from its files (rounds.jsonl, fusion_weights.jsonl).

    Why not at the end of the run, as :class:`ResultsWriter` can: a simulation draws them
    after its engine has stopped, so matplotlib's memory (about 0.1 GiB in the driver)
    does not add to that of the engine's workers, still running at the run's end."""
    folder = Path(out_dir)
    try:
        rounds = [RoundRecord.from_dict(row) for row in read_json_lines(folder / "rounds.jsonl")]
    except (TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(f"{folder / 'rounds.jsonl'}: not fedkt's rounds ({exc})") from None
    path = folder / "fusion_weights.jsonl"
    text = read_text(path, ResultsError, "JSON-lines text file") if path.exists() else ""
    _draw(folder, title, rounds, _last_fusion(text.splitlines(), path))


def _draw(
    folder: Path,
    title: str,
    rounds: list[RoundRecord],
    last_weights: tuple[int, list[int], np.ndarray] | None,
) -> None:
    from fedkt import plots

    plots.accuracy_per_round(rounds, folder / "accuracy.png", title=title)
    if last_weights is not None:
        r, clients, weights = last_weights
        plots.fusion_heatmap(
            weights,
            folder / "fusion_weights.png",
            title=f"{title}: fusion weights, round {r}",
            clients=clients,
        )
