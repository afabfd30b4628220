"""Run the robustness study and write its table: honest clients' final ALMA with 0%, 10%,
20% and 30% of clients attacking, for each attack, each strategy, over the seeds.

    python simulations/robustness/run.py                        # compare_digits.yaml, every setting
    python simulations/robustness/run.py --attacks scale --fractions 0.2
    python simulations/robustness/run.py --table-only           # only rewrite the table

Each setting is one ``fedkt compare`` of the study file with ``faults.byzantine`` and
``faults.attack`` set (``local`` is run fault-free only: it sends nothing to corrupt, and
an honest client's accuracy alone is the floor every row is read against). Tuning runs on
a fault-free federation, so every setting reuses the clean setting's trials and chosen
values (``--reuse``). Resumable: run the same command again after an interruption.

The table (``<out>/table.md``) gives mean ± sd over seeds and, per attacked setting, the
paired difference (by seed) to the same strategy without attackers with a 95% interval.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from fedkt.report import paired

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = ("random", "flip", "scale")
FRACTIONS = (0.2, 0.1, 0.3)  #: the run order: 20% (the headline setting) first
FLOOR = "local"  #: run fault-free only; the row every other is read against


def setting_name(attack: str | None, fraction: float) -> str:
    return "clean" if attack is None else f"{attack}-{round(100 * fraction)}pct"


def comparison_file(study: Path, out: Path, attack: str | None, fraction: float) -> Path:
    """The study file for one setting, written next to its results (base made absolute)."""
    spec = yaml.safe_load(study.read_text())
    base = spec.get("base")
    if isinstance(base, str) and base != "default":
        spec["base"] = str((study.parent / base).resolve())
    name = setting_name(attack, fraction)
    spec["name"] = f"{spec.get('name', 'robustness')}-{name}"
    if attack is not None:
        spec["strategies"] = [
            s for s in spec["strategies"] if (s if isinstance(s, str) else s["name"]) != FLOOR
        ]
        spec["set"] = [*spec.get("set", []), f"faults.byzantine={fraction}",
                       f"faults.attack={attack}"]  # fmt: skip
    path = out / f"{name}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_honest(results: Path) -> dict[str, dict[int, float]]:
    """results.csv -> {strategy: {seed: honest clients' final ALMA}} (ALMA when nobody attacks)."""
    out: dict[str, dict[int, float]] = {}
    if not results.exists():
        return out
    with open(results) as fh:
        for row in csv.DictReader(fh):
            value = row.get("honest_alma") or row.get("alma")
            if value in (None, "", "None"):
                continue
            out.setdefault(row["strategy"], {})[int(row["seed"])] = float(value)
    return out


def _cell(values: dict[int, float]) -> str:
    if not values:
        return "-"
    xs = list(values.values())
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def _diff(attacked: dict[int, float], clean: dict[int, float]) -> str:
    p = paired(attacked, clean)
    return f" ({100 * p.mean:+.1f} [{100 * p.lo:+.1f}, {100 * p.hi:+.1f}])" if p.n > 1 else ""


def table(out: Path, attacks: Sequence[str], fractions: Sequence[float]) -> str:
    """One markdown table per attack: strategies x fraction of attackers; each attacked
    cell also gives the paired difference to the same strategy without attackers."""
    clean = read_honest(out / "clean" / "results.csv")
    strategies = list(clean)
    lines: list[str] = []
    for attack in attacks:
        by_fraction = {f: read_honest(out / setting_name(attack, f) / "results.csv")
                       for f in fractions}  # fmt: skip
        for res in by_fraction.values():
            strategies += [s for s in res if s not in strategies]
        head = " | ".join(f"{round(100 * f)}% (vs 0% [95% CI])" for f in fractions)
        lines += [f"### `{attack}`", "", f"| strategy | 0% | {head} |",
                  "|---|---|" + "---|" * len(fractions)]  # fmt: skip
        for s in strategies:
            cols = [
                "(sends nothing)"
                if s == FLOOR
                else _cell(by_fraction[f].get(s, {}))
                + _diff(by_fraction[f].get(s, {}), clean.get(s, {}))
                for f in fractions
            ]
            lines.append(f"| {s} | {_cell(clean.get(s, {}))} | {' | '.join(cols)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "simulations/robustness/compare_digits.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs/robustness-digits"))
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--reuse", metavar="DIR", action="append", default=[],
                        help="finished runs that stand in for identical cells")  # fmt: skip
    parser.add_argument("--table-only", action="store_true", help="run nothing; write the table")
    args = parser.parse_args(argv)
    study, out = Path(args.study).resolve(), Path(args.out).resolve()
    if not study.is_file():
        parser.error(f"--study: {study} does not exist")
    if bad := [f for f in args.fractions if not 0 < f < 0.5]:
        parser.error(f"--fractions: {bad[0]} is not between 0 and 0.5")
    fractions = sorted(args.fractions)
    if not args.table_only:
        from fedkt.server.cli import main as fedkt_main

        settings = [(None, 0.0)] + [(a, f) for f in args.fractions for a in args.attacks]
        for attack, fraction in settings:
            name = setting_name(attack, fraction)
            path = comparison_file(study, out / "plans", attack, fraction)
            reuse = [str(out / "clean"), *args.reuse] if attack is not None else args.reuse
            print(f"robustness: {name}", flush=True)
            code = fedkt_main(
                ["compare", str(path), "--out", str(out / name),
                 *(arg for folder in reuse for arg in ("--reuse", folder))]  # fmt: skip
            )
            if code:
                return code
    text = table(out, args.attacks, fractions)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
