"""Statistics and the report of a comparison: what won, by how much, and whether the
seeds can tell.

Every comparison under one seed gives every strategy the same partitions, transfer set,
client samples and initial models, so strategies are compared *paired by seed*: the
difference d_k = ALMA_s(seed k) - ALMA_ref(seed k) and a t-based 95% confidence interval
of its mean. A verdict against a reference uses a stated non-inferiority margin delta:

- better: the whole interval is above 0;
- worse: the whole interval is below 0;
- non-inferior: the interval lies above -delta (no worse than delta, at 95%);
- the seeds cannot tell: anything else (or a single seed).

Flags name results that need a look before anyone reads a number: a strategy whose
final ALMA is below chance (1 / classes), below its own accuracy right after local
training (``local_alma``) by more than ``flag_margin`` or, over two or more seeds, by at
least :data:`STEP_DROP` with the whole paired 95% interval of that drop below zero (a
method's exchange step that lowers what local training reached is a bug until shown to be
the method's own behaviour, and a consistent 3-4 point drop is as telling as a noisy 6;
the flag says when the same step raised global-test accuracy over the reference's, paired
by seed, which is the trade a shared model or consensus makes under label skew, not a
loss), with dead clients (final
accuracy at or below chance), or with clients left far behind: a client whose final
accuracy is more than :data:`CLIENT_DROP` below the *same* client's under the reference
strategy (same seed, same data). A collapsed network that predicts one class scores
that class's share of its client's test split, which under label skew is often far above
chance, so only the paired per-client comparison sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedkt.errors import ResultsError
from fedkt.results import read_fusion_weights, read_json, read_json_lines

#: A client result is "left behind" when it ends this far below the same client under the
#: reference strategy (accuracy as a fraction): well beyond seed-to-seed noise of one
#: client's 500-sample test split (a binomial standard error of about 2 points).
CLIENT_DROP = 0.2

#: The smallest drop below ``local_alma`` that is flagged on the strength of its paired
#: interval alone (as a fraction): a point, so that a consistent but negligible drop is
#: not called out.
STEP_DROP = 0.01


def confidence_interval(
    values: list[float] | list[float | None], level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the t-based confidence interval); NaN when n < 2."""
    from scipy.special import stdtrit  # Student's t quantile; a third of scipy.stats' import

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, math.nan, math.nan
    std = float(arr.std(ddof=1))
    half = float(stdtrit(len(arr) - 1, 0.5 + level / 2) * std / math.sqrt(len(arr)))
    return mean, std, half


@dataclass(frozen=True)
class Paired:
    """Mean of per-seed differences and its 95% interval [lo, hi] over ``n`` shared seeds."""

    mean: float
    lo: float
    hi: float
    n: int

    def verdict(self, margin: float) -> str:
        if self.n < 2 or not math.isfinite(self.lo):
            return "the seeds cannot tell" if self.n else "no shared seeds"
        if self.lo > 0:
            return "better"
        if self.hi < 0:
            return "worse"
        if self.lo > -margin:
            return f"non-inferior (margin {100 * margin:g} pt)"
        return "the seeds cannot tell"

    def text(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "-"
        if not math.isfinite(self.lo):
            return f"{100 * self.mean:+.1f}"
        return f"{100 * self.mean:+.1f} [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]"


def paired(a: dict[int, float | None], b: dict[int, float | None]) -> Paired:
    """``a`` - ``b`` over the seeds both have a finite value for."""
    both = {k: (x, y) for k, x in a.items() if (y := b.get(k)) is not None and x is not None}
    seeds = sorted(k for k, (x, y) in both.items() if math.isfinite(x) and math.isfinite(y))
    diffs: list[float] = [both[k][0] - both[k][1] for k in seeds]
    mean, _, half = confidence_interval(diffs)
    return Paired(mean, mean - half, mean + half, len(seeds))


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


@dataclass
class CellResult:
    """What the report needs from one finished cell."""

    strategy: str
    partition: str
    seed: int
    summary: dict[str, Any]
    num_classes: int
    client_accuracies: list[float] = field(default_factory=list)
    alma_per_round: list[float | None] = field(default_factory=list)
    by_client: dict[int, float] = field(default_factory=dict)  #: client id -> final accuracy
    self_weight: float | None = None  #: mean diagonal of the fusion weights, all rounds
    fusion: np.ndarray | None = None  #: (clients, clients) fusion weights averaged over rounds

    @classmethod
    def load(
        cls, cdir: Path, strategy: str, partition: str, seed: int, num_classes: int
    ) -> CellResult | None:
        """A finished cell read back (None while it has no summary); files that are not
        what fedkt wrote are a one-line :class:`ResultsError` naming the cell."""
        if not (cdir / "summary.json").exists():
            return None
        summary = read_json(cdir / "summary.json")
        rows = read_json_lines(cdir / "metrics.jsonl")
        try:
            return cls._from(cdir, strategy, partition, seed, num_classes, summary, rows)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ResultsError(
                f"{cdir}: results not as fedkt writes them ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _from(
        cls,
        cdir: Path,
        strategy: str,
        partition: str,
        seed: int,
        num_classes: int,
        summary: dict[str, Any],
        rows: list[dict[str, Any]],
    ) -> CellResult:
        last = max((r["round"] for r in rows), default=0)
        final = [r for r in rows if r["round"] == last and r.get("accuracy") is not None]
        cell = cls(
            strategy,
            partition,
            seed,
            summary,
            num_classes,
            [r["accuracy"] for r in final],
            summary.get("alma_per_round", []),
            {int(r["client"]): r["accuracy"] for r in final if "client" in r},
        )
        weights = read_fusion_weights(cdir)
        if weights:
            n = int(summary.get("num_clients") or 0)
            total, seen = np.zeros((n, n)), np.zeros((n, n))
            diag = []
            for clients, w in weights.values():
                idx = np.asarray(clients)
                total[np.ix_(idx, idx)] += w
                seen[np.ix_(idx, idx)] += 1
                diag.extend(np.diag(w).tolist())
            with np.errstate(invalid="ignore"):
                cell.fusion = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
            cell.self_weight = float(np.mean(diag)) if diag else None
        return cell


@dataclass
class Row:
    """One strategy in one partition setting, over its seeds."""

    strategy: str
    n: int
    alma: tuple[float, float, float]
    local_alma: float
    worst: tuple[float, float, float]
    global_acc: tuple[float, float, float]
    steps: float
    mbytes: float
    wall: float
    self_weight: float | None
    vs_ref: Paired | None
    vs_best: Paired | None
    #: global-test accuracy - the reference's, paired by seed: whether an exchange step
    #: that costs the clients' own classes taught them the others'
    global_vs_ref: Paired | None
    #: final ALMA - local_alma, paired by seed: what the round's exchange step did
    step: Paired
    flags: list[str]
    alma_per_round: list[float]
    alma_per_round_ci: list[float]
    client_accuracies: list[float]
    fusion: np.ndarray | None
    #: (clients more than CLIENT_DROP below the same client under the reference, pairs)
    left_behind: tuple[int, int] = (0, 0)


def _mean(values: list[Any]) -> float:
    vals = [v for v in values if _finite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarise(
    cells: list[CellResult], margin: float, flag_margin: float, reference: str
) -> dict[str, dict[str, Row]]:
    """partition -> strategy -> Row, with paired differences to the ``reference`` strategy
    (local training, in the default comparison) and to the best."""
    table: dict[str, dict[str, Row]] = {}
    partitions = list(dict.fromkeys(c.partition for c in cells))
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    for p in partitions:
        by_s = {s: [c for c in cells if c.partition == p and c.strategy == s] for s in strategies}
        alma = {s: {c.seed: c.summary.get("alma") for c in cs} for s, cs in by_s.items()}
        glob = {
            s: {c.seed: c.summary.get("global_accuracy") for c in cs} for s, cs in by_s.items()
        }
        means = {s: _mean(list(v.values())) for s, v in alma.items()}
        ranked = sorted((s for s in strategies if math.isfinite(means[s])), key=lambda s: -means[s])
        best = ranked[0] if ranked else None
        rows = {}
        for s, cs in by_s.items():
            rounds = max((len(c.alma_per_round) for c in cs), default=0)
            per_round = [
                [c.alma_per_round[r] for c in cs if r < len(c.alma_per_round)]
                for r in range(rounds)
            ]
            cis = [confidence_interval(v) for v in per_round]
            chance = 1.0 / cs[0].num_classes if cs else math.nan
            row = Row(
                strategy=s,
                n=len(cs),
                alma=confidence_interval([c.summary.get("alma") for c in cs]),
                local_alma=_mean([c.summary.get("local_alma") for c in cs]),
                worst=confidence_interval([c.summary.get("worst_client_accuracy") for c in cs]),
                global_acc=confidence_interval([c.summary.get("global_accuracy") for c in cs]),
                steps=_mean([c.summary.get("steps_per_round") for c in cs]),
                mbytes=_mean([(c.summary["bytes_up"] + c.summary["bytes_down"]) / 1e6 for c in cs]),
                wall=_mean([c.summary.get("wall_seconds") for c in cs]),
                self_weight=_mean([c.self_weight for c in cs])
                if any(c.self_weight is not None for c in cs)
                else None,
                vs_ref=paired(alma[s], alma[reference])
                if reference in alma and s != reference
                else None,
                vs_best=paired(alma[s], alma[best]) if best is not None and s != best else None,
                global_vs_ref=paired(glob[s], glob[reference])
                if reference in glob and s != reference
                else None,
                step=paired(alma[s], {c.seed: c.summary.get("local_alma") for c in cs}),
                flags=[],
                alma_per_round=[ci[0] for ci in cis],
                alma_per_round_ci=[ci[2] for ci in cis],
                client_accuracies=[a for c in cs for a in c.client_accuracies],
                fusion=_mean_fusion([c.fusion for c in cs]),
                left_behind=left_behind(cs, by_s.get(reference, [])) if s != reference else (0, 0),
            )
            row.flags = flags(row, chance, flag_margin, reference)
            rows[s] = row
        table[p] = rows
    return table


def _mean_fusion(mats: list[np.ndarray | None]) -> np.ndarray | None:
    present = [m for m in mats if m is not None]
    if not present or len({m.shape for m in present}) != 1:
        return None
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(present), axis=0)


def left_behind(cells: list[CellResult], reference: list[CellResult]) -> tuple[int, int]:
    """(client results more than :data:`CLIENT_DROP` below the same client of the same seed
    under the reference strategy, client results that have such a pair)."""
    ref = {(c.seed, k): a for c in reference for k, a in c.by_client.items()}
    pairs = [
        (a, ref[c.seed, k]) for c in cells for k, a in c.by_client.items() if (c.seed, k) in ref
    ]
    return sum(1 for a, r in pairs if a < r - CLIENT_DROP), len(pairs)


def flags(row: Row, chance: float, flag_margin: float, reference: str) -> list[str]:
    """Plain-words warnings about a strategy's result (empty when nothing is wrong)."""
    out = []
    alma = row.alma[0]
    if _finite(alma) and alma < chance:
        out.append(f"ends below chance ({100 * alma:.1f}% < {100 * chance:.1f}%)")
    step = row.step
    consistent = step.n >= 2 and step.hi < 0 and step.mean <= -STEP_DROP
    if (
        _finite(alma)
        and _finite(row.local_alma)
        and (alma < row.local_alma - flag_margin or consistent)
    ):
        paired_text = (
            f"; paired over {step.n} seeds: {step.text()}" if math.isfinite(step.lo) else ""
        )
        taught = row.global_vs_ref
        gained = (
            f"; its global-test accuracy is {taught.text()} points over {reference}'s: the "
            "step taught the clients classes they do not hold, at a cost on their own (what "
            "a shared model or a consensus does under label skew; a step size not tuned on "
            "validation data makes the cost larger)"
            if taught is not None and taught.n >= 2 and taught.lo > 0
            else ""
        )
        out.append(
            f"ends {100 * (row.local_alma - alma):.1f} points below its own accuracy after local "
            "training "
            f"({100 * alma:.1f}% vs {100 * row.local_alma:.1f}%{paired_text}){gained}"
        )
    dead = sum(1 for a in row.client_accuracies if a <= chance)
    if dead:
        out.append(
            f"{dead} dead client result(s) (final accuracy at or below chance), over {row.n} "
            "seed(s)"
        )
    behind, pairs = row.left_behind
    if behind:
        out.append(
            f"{behind} of {pairs} client results end more than {100 * CLIENT_DROP:g} points below "
            f"the same client under {reference} (same seed and data)"
        )
    return out


def _fmt(ci: tuple[float, float, float]) -> str:
    mean, std, _ = ci
    if not _finite(mean):
        return "-"
    return f"{100 * mean:.1f}" if not _finite(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def headline(table: dict[str, dict[str, Row]], margin: float, reference: str) -> list[str]:
    """The report's opening: what won in each setting, by how much, and whether the seeds
    can tell."""
    lines = []
    for p, rows in table.items():
        ranked = sorted((r for r in rows.values() if _finite(r.alma[0])), key=lambda r: -r.alma[0])
        if not ranked:
            lines.append(f"- **{p}**: no finished cells.")
            continue
        best = ranked[0]
        text = (
            f"- **{p}**: **{best.strategy}** has the highest ALMA "
            f"({_fmt(best.alma)}%, {best.n} seed{'s' if best.n != 1 else ''})"
        )
        if len(ranked) > 1:
            second = ranked[1]
            d = second.vs_best
            assert d is not None
            v = d.verdict(margin)
            if v == "worse":
                tell = "a significant lead"
            elif v.startswith("non-inferior"):
                tell = f"the runner-up is within the {100 * margin:g}-point margin"
            else:
                tell = "the seeds cannot separate them"
            text += f"; next is {second.strategy} at {d.text()} points ({tell})"
        if best.vs_ref is not None:
            text += f"; vs {reference}: {best.vs_ref.text()} points, {best.vs_ref.verdict(margin)}"
        lines.append(text + ".")
    return lines


def markdown(
    name: str,
    table: dict[str, dict[str, Row]],
    seeds: list[int],
    finished: int,
    total: int,
    margin: float,
    flag_margin: float,
    budget: int | None,
    reference: str,
) -> str:
    lines = [f"# Comparison: {name}", "", "## What won", ""]
    lines += headline(table, margin, reference)
    lines += ["", "## Flags", ""]
    flagged = [
        f"- {p} / {s}: {f}" for p, rows in table.items() for s, r in rows.items() for f in r.flags
    ]
    lines += flagged or [
        f"None: no strategy ends below chance, more than {100 * flag_margin:g} points (or, "
        f"consistently over the seeds, {100 * STEP_DROP:g} point or more) below its "
        "own accuracy after local training, with dead clients, or with clients more than "
        f"{100 * CLIENT_DROP:g} points below the same client under {reference}."
    ]
    lines += [
        "",
        "## Protocol",
        "",
        f"{finished}/{total} cells finished; seeds {', '.join(map(str, seeds))}. Under one seed "
        "every "
        "strategy sees the same partitions, transfer set, client samples and initial models, so "
        "differences are paired by seed: mean [95% t-interval] in percentage points.",
        "Each round: local training, then the method's exchange (distillation with a private-data "
        "CE "
        "anchor unless the method's paper says otherwise), then scoring. ALMA: mean over clients "
        "of each "
        "client's accuracy on a test split with its own label distribution, final round; "
        "local_alma: the "
        "same right after local training; global: the clients' mean accuracy on the whole "
        "test set (every class), final round.",
        f"Verdicts use a non-inferiority margin of {100 * margin:g} points. "
        + (
            f"Budget: every strategy takes exactly {budget} optimiser steps per client and round "
            "in its exchange phase (distillation, or extra local training where nothing is "
            "distilled)."
            if budget is not None
            else "Budget: not matched (each strategy's own epochs); steps/round shows what each "
            "took."
        ),
        "",
    ]
    for p, rows in table.items():
        lines += [
            f"## {p}",
            "",
            f"| strategy | ALMA | CI95 | local_alma | global | Δ vs {reference} "
            f"| verdict vs {reference} | Δ vs best | worst client "
            "| steps/round | self-weight | MB/run | s/run | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rows.values(), key=lambda r: -(r.alma[0] if _finite(r.alma[0]) else -1)):
            ci = f"± {100 * r.alma[2]:.1f}" if _finite(r.alma[2]) else "-"
            local = f"{100 * r.local_alma:.1f}" if _finite(r.local_alma) else "-"
            sw = (
                f"{r.self_weight:.2f}"
                if r.self_weight is not None and _finite(r.self_weight)
                else "-"
            )
            steps = f"{r.steps:.0f}" if _finite(r.steps) else "-"
            lines.append(
                f"| {r.strategy} | {_fmt(r.alma)} | {ci} | {local} | {_fmt(r.global_acc)} | "
                f"{r.vs_ref.text() if r.vs_ref else '-'} | "
                f"{r.vs_ref.verdict(margin) if r.vs_ref else '-'} | "
                f"{r.vs_best.text() if r.vs_best else '(best)'} | {_fmt(r.worst)} | {steps} | "
                f"{sw} | "
                f"{r.mbytes:.2f} | {r.wall:.1f} | {r.n} |"
            )
        lines.append("")
    lines += [
        "## Figures",
        "",
        "Each figure also as a vector PDF beside the PNG.",
        "",
        "![final ALMA](final_alma.png)",
        "",
        "![ALMA per round](alma_per_round.png)",
        "",
        "![ALMA vs bytes](alma_vs_bytes.png)",
        "",
        "![per-client accuracy](client_spread.png)",
        "",
    ]
    if any(r.fusion is not None for rows in table.values() for r in rows.values()):
        lines += ["![who learned from whom](fusion_weights.png)", ""]
    lines += [
        "Per-cell results (config, metrics, plots) are under "
        "`cells/<strategy>/<partition>/seed-<k>/`; "
        "all cells in `results.csv`.",
        "",
    ]
    return "\n".join(lines)
