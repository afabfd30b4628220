"""Overhead: a fedkt KnFu simulation against the same work as a plain PyTorch loop.

For each federation size, in one run: the plain loop (:mod:`benchmarks.plain_loop`, one
process) with 1 torch thread and with one thread per core, then fedkt through Flower's
simulation engine:

- ``parallel`` (fedkt's default): one core per client, as many clients at once as
  there are cores;
- ``serial``: one client at a time given every core (``simulation.num_cpus_per_client``
  = the core count), the plain loop's parallelism.

The ratio is fedkt's wall time over the *fastest* plain run's, for the whole experiment
(engine start and data loading included on both sides) and per round in the steady
state (rounds after the first, where Ray's workers are warm). Run it on an otherwise
idle machine: torch's multi-threaded kernels slow down many-fold when other processes
hold the cores, which would make the comparison meaningless.

    python -m benchmarks.overhead                      # 10 and 100 clients on MNIST
    python -m benchmarks.overhead --clients 10 --rounds 2 --dataset digits   # quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.harness import command, config, fail, print_table, simulate_timed
from benchmarks.plain_loop import run_plain_knfu
from fedkt.errors import FedktError

BASE = "simulations/knfu_paper/mnist.yaml"


def overrides(args: argparse.Namespace, clients: int) -> list[str]:
    return [
        f"dataset={args.dataset}",
        f"num_clients={clients}",
        f"rounds={args.rounds}",
        f"seed={args.seed}",
        "strategy=knfu",
        "strategy.fusion_params.beta=10.0",
        "fraction=1.0",
        f"partition.samples_per_client={args.samples_per_client}",
        f"transfer.size={args.transfer_size}",
        "evaluation.client_test_size=100",
        "evaluation.global_test_size=500",
        "train.epochs=1",
        "distill.epochs=1",
    ]


def steady(rounds: list[dict]) -> float:
    """Mean wall time of the rounds after the first (the first warms Ray's workers up)."""
    later = [r["wall_seconds"] for r in rounds[1:]] or [r["wall_seconds"] for r in rounds]
    return float(np.mean(later))


def steady_plain(run: dict) -> float:
    return steady([{"wall_seconds": w} for w in run["round_walls"]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--samples-per-client", type=int, default=500)
    parser.add_argument("--transfer-size", type=int, default=1000)
    parser.add_argument(
        "--modes", default="serial,parallel", help="comma-separated subset of serial,parallel"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"serial", "parallel"}:
        parser.error(f"--modes: use serial and/or parallel, not {args.modes!r}")
    if min(args.clients) < 1 or args.rounds < 1:
        parser.error("--clients and --rounds must be >= 1")
    cores = os.cpu_count() or 1
    rows = []
    try:
        for n in args.clients:
            base = overrides(args, n)
            plain_cfg = config(BASE, base)
            plain_runs = {}
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                plain_runs[threads] = run_plain_knfu(plain_cfg)
                r = plain_runs[threads]
                rows.append(
                    [
                        n,
                        f"plain, {threads} thread(s)",
                        f"{r['wall']:.1f}",
                        "",
                        f"{steady_plain(r):.2f}",
                        "",
                        f"{100 * r['alma']:.1f}",
                    ]
                )
            torch.set_num_threads(cores)
            best = min(plain_runs.values(), key=lambda r: r["wall"])
            for mode in modes:
                cpus = cores if mode == "serial" else 1
                cfg = config(BASE, [*base, f"simulation.num_cpus_per_client={cpus}"])
                with tempfile.TemporaryDirectory(prefix="fedkt-overhead-") as out:
                    run = simulate_timed(cfg, out)
                per_round = steady(run["rounds"])
                rows.append(
                    [
                        n,
                        f"fedkt {mode}",
                        f"{run['wall']:.1f}",
                        f"{run['wall'] / best['wall']:.3f}",
                        f"{per_round:.2f}",
                        f"{per_round / steady_plain(best):.3f}",
                        f"{100 * run['summary']['alma']:.1f}",
                    ]
                )
                print(
                    f"{n} clients, {mode}: fedkt {run['wall']:.1f} s, fastest plain "
                    f"{best['wall']:.1f} s",
                    file=sys.stderr,
                )
    except FedktError as exc:
        return fail(parser.prog, exc)
    print_table(
        f"fedkt vs plain PyTorch: KnFu, {args.rounds} rounds, {args.samples_per_client} "
        "samples/client, "
        f"{args.transfer_size} transfer samples, {args.dataset}, {cores} cores (ratios: fedkt / "
        "fastest plain)",
        ["clients", "run", "wall s", "ratio", "s / round", "round ratio", "ALMA %"],
        rows,
    )
    return 0


if __name__ == "__main__":
    command(main, "benchmarks.overhead")
