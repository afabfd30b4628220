"""Engine start-up: the same cells run each with its own engine, then in one shared engine.

A comparison is many short simulations. Run alone, each pays Flower's simulation engine
start-up: Ray, one actor per client slot importing torch, the dataset loaded and the
experiment resolved in every actor. `fedkt compare` runs its cells in one shared engine
(:mod:`fedkt.server.shared_engine`). This benchmark runs the same cells both ways and
prints, per way: wall time, the time spent inside rounds (from rounds.jsonl), the
start-up share (1 - in-round / wall) and the fixed overhead per cell; and checks that
both ways give identical metrics.

    python -m benchmarks.engine                      # 11 digits cells (every strategy), 5 rounds
    python -m benchmarks.engine --cells 4 --rounds 2 # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import command, config, fail, print_table
from fedkt.errors import FedktError


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _lines(path: Path) -> list[dict]:
    """A results file's lines without wall-clock times (everything else must match)."""
    return [{k: v for k, v in line.items() if k != "wall_seconds"} for line in _jsonl(path)]


def run_cells(cfgs: list, root: Path, shared: bool) -> list[tuple[float, float]]:
    """Per cell: (wall seconds, seconds inside its rounds)."""
    from fedkt.server.shared_engine import shared_engine
    from fedkt.server.simulation import simulate

    out = []
    with shared_engine() if shared else contextlib.nullcontext():
        for i, cfg in enumerate(cfgs):
            start = time.perf_counter()
            simulate(cfg, str(root / f"cell-{i}"), plots=False)
            wall = time.perf_counter() - start
            out.append(
                (wall, sum(r["wall_seconds"] for r in _jsonl(root / f"cell-{i}" / "rounds.jsonl")))
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__)
    parser.add_argument("--cells", type=int, default=11, help="cells (strategies in turn)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--config", default=None, help="experiment YAML (default: digits)")
    args = parser.parse_args(argv)
    try:
        from fedkt.experiment import strategy_names

        if args.cells < 1 or args.rounds < 1:
            raise FedktError("--cells and --rounds must be >= 1")
        names = [n for n in strategy_names() if n != "knfu_rel"]
        cfgs = [
            config(args.config, [f"rounds={args.rounds}", f"strategy={names[i % len(names)]}"])
            for i in range(args.cells)
        ]
        rows = []
        with tempfile.TemporaryDirectory(prefix="fedkt-engine-") as tmp:
            dirs = {}
            for way, shared in (("each cell its own engine", False), ("one shared engine", True)):
                dirs[way] = Path(tmp) / ("shared" if shared else "alone")
                cells = run_cells(cfgs, dirs[way], shared)
                wall, inside = (sum(c[i] for c in cells) for i in (0, 1))
                later = [w - r for w, r in cells[1:]]
                rows.append(
                    [
                        way,
                        args.cells,
                        f"{wall:.1f}",
                        f"{inside:.1f}",
                        f"{100 * (1 - inside / wall):.0f}%",
                        f"{cells[0][0] - cells[0][1]:.1f}",
                        f"{sum(later) / len(later):.2f}" if later else "-",
                    ]
                )
            a, b = dirs.values()
            same = all(
                _lines(a / f"cell-{i}" / f) == _lines(b / f"cell-{i}" / f)
                for i in range(args.cells)
                for f in ("metrics.jsonl", "rounds.jsonl")
            )
        print_table(
            f"engine start-up: {args.cells} cells x {args.rounds} rounds",
            [
                "way",
                "cells",
                "wall s",
                "in rounds s",
                "start-up share",
                "fixed s, first cell",
                "fixed s / later cell",
            ],
            rows,
        )
        print(f"identical metrics both ways: {'yes' if same else 'NO'}")
        return 0 if same else 1
    except (FedktError, OSError) as exc:
        return fail("benchmarks.engine", exc)


if __name__ == "__main__":
    command(main, "benchmarks.engine")
