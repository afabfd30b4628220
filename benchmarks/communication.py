"""Communication: bytes per round of every strategy, measured on the real payloads, and
the accuracy each buys per megabyte.

Bytes are what fedkt's server loop counts for every message it sends and receives:
the size of the serialised Flower Message (its RecordDict as Flower puts it on the
wire), so weights, soft labels, class tables, metrics and config all count. All
strategies run the same experiment (same clients, data, seed and rounds).

"gain" is the final ALMA minus that of the ``local`` strategy (no communication), in
percentage points, and "gain / MB" divides it by the megabytes the run moved (up and
down, every round; the one-off handshake is shown apart).

    python -m benchmarks.communication                                 # MNIST, every strategy
    python -m benchmarks.communication --dataset digits --rounds 3     # quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from benchmarks.harness import command, config, fail, print_table, simulate_timed
from fedkt.errors import FedktError
from fedkt.experiment import strategy_names

MB = 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.communication", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config",
        default="simulations/knfu_mnist.yaml",
        help="experiment YAML every strategy runs",
    )
    parser.add_argument("--dataset", default=None, help="override the config's dataset")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--strategies", nargs="+", default=None, help="default: every registered strategy"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.strategies or strategy_names()
    unknown = [s for s in names if s not in strategy_names()]
    if unknown:
        parser.error(
            f"--strategies: unknown strategy {unknown[0]!r} (known: {', '.join(strategy_names())})"
        )
    if "local" not in names:
        names = ["local", *names]  # the reference for "gain"
    extra = [f"rounds={args.rounds}", f"seed={args.seed}"] + (
        [f"dataset={args.dataset}"] if args.dataset else []
    )
    results = {}
    try:
        for name in names:
            cfg = config(args.config, [*extra, f"strategy={name}"])
            with tempfile.TemporaryDirectory(prefix="fedkt-comm-") as out:
                results[name] = simulate_timed(cfg, out)
            print(f"{name}: ALMA {100 * results[name]['summary']['alma']:.1f}%", file=sys.stderr)
    except FedktError as exc:
        return fail(parser.prog, exc)
    local = results["local"]["summary"]["alma"]
    rows = []
    for name in sorted(names, key=lambda s: -results[s]["summary"]["alma"]):
        s, rounds = results[name]["summary"], results[name]["rounds"]
        up = float(np.mean([r["bytes_up"] for r in rounds])) / MB
        down = float(np.mean([r["bytes_down"] for r in rounds])) / MB
        total = (s["bytes_up"] + s["bytes_down"]) / MB
        gain = 100 * (s["alma"] - local)
        rows.append(
            [
                name,
                f"{up:.3f}",
                f"{down:.3f}",
                f"{total:.2f}",
                f"{s.get('setup_bytes', 0) / MB:.3f}",
                f"{100 * s['alma']:.1f}",
                f"{gain:+.1f}",
                "-" if name == "local" else f"{gain / total:+.2f}",
            ]
        )
    cfg = config(args.config, extra)
    print_table(
        f"communication: {cfg.num_clients} clients, {args.rounds} rounds, {cfg.dataset}, "
        f"{cfg.model.name}, "
        f"transfer set {cfg.transfer.size}",
        [
            "strategy",
            "MB up / round",
            "MB down / round",
            "MB total",
            "handshake MB",
            "ALMA %",
            "gain pp",
            "gain pp / MB",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    command(main, "benchmarks.communication")
