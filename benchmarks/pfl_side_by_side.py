"""fedkt and Apple's pfl, side by side in one run: the same FedAvg workload.

pfl-research (PyPI ``pfl``) is a single-process simulator that reports 7-72x speed-ups
over other open-source FL simulators. This benchmark gives pfl and fedkt the same data
(fedkt's own federation, exported: the clients' rows, normalised as fedkt's model sees
them, and the global test subset), the same clients, the same model layers (fedkt's
``mlp``) and the same training budget (rounds, local epochs, batch size, SGD learning rate
and momentum), runs both as separate processes one after the other, and prints wall time
and the final global model's test accuracy of each.

Not identical by construction, and why: fedkt shuffles each client's batches, pfl slices
them in order; fedkt evaluates every client every round (its ALMA and global-test
figures) and pfl only the final model here; fedkt runs Flower's simulation engine (Ray,
one worker actor per core, messages between ServerApp and ClientApps), pfl one process.

    python -m venv /tmp/pfl && /tmp/pfl/bin/pip install torch==2.13.0 'pfl[pytorch]==0.6.0'
    python -m benchmarks.pfl_side_by_side --pfl-python /tmp/pfl/bin/python
    python -m benchmarks.pfl_side_by_side --pfl-python /tmp/pfl/bin/python --dataset mnist \\
        --clients 20 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import command, config, fail, print_table
from fedkt.errors import FedktError

ROOT = Path(__file__).resolve().parents[1]


def export(cfg, path: Path) -> int:
    """Write fedkt's federation for ``cfg`` as pfl_fedavg.py reads it; returns the rows."""
    from fedkt.experiment import resolve

    fed = resolve(cfg).federation()
    ds = fed.dataset
    rows = np.concatenate(fed.client_idx)
    starts = np.cumsum([0] + [len(i) for i in fed.client_idx])
    partition = {str(c): list(range(starts[c], starts[c + 1])) for c in range(len(fed.client_idx))}
    test_rows = fed.global_test_idx

    def flat(x: np.ndarray) -> np.ndarray:
        return ds.tensor(x).reshape(len(x), -1).numpy()

    np.savez(
        path,
        x_train=flat(ds.train_x[rows]),
        y_train=ds.train_y[rows].astype(np.int64),
        x_test=flat(ds.test_x[test_rows]),
        y_test=ds.test_y[test_rows].astype(np.int64),
        partition=np.array(json.dumps(partition)),
    )
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pfl_side_by_side", description=__doc__
    )
    parser.add_argument("--pfl-python", required=True, help="python of an environment with pfl")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if not Path(args.pfl_python).exists():
            raise FedktError(f"--pfl-python {args.pfl_python}: not found")
        overrides = [
            "strategy=fedavg",
            "model.name=mlp",
            f"dataset={args.dataset}",
            f"num_clients={args.clients}",
            f"rounds={args.rounds}",
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.lr={args.lr}",
            f"train.momentum={args.momentum}",
            "partition.name=dirichlet",
            f"partition.alpha={args.alpha}",
            f"seed={args.seed}",
        ]
        cfg = config(None, overrides)
        with tempfile.TemporaryDirectory(prefix="fedkt-pfl-") as tmp:
            data = Path(tmp) / "federation.npz"
            n_rows = export(cfg, data)
            start = time.perf_counter()
            pfl = subprocess.run(
                [args.pfl_python, str(ROOT / "benchmarks" / "pfl_fedavg.py"), "--data", str(data),
                 "--rounds", str(args.rounds), "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                 "--momentum", str(args.momentum), "--seed", str(args.seed), "--threads", "1"],
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            pfl_wall = time.perf_counter() - start
            if pfl.returncode != 0:
                raise FedktError(f"pfl run failed: {pfl.stderr.strip().splitlines()[-1:]}")
            p = json.loads(pfl.stdout.strip().splitlines()[-1])
            out = Path(tmp) / "fedkt"
            start = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "fedkt.server.cli", "run", "--out", str(out),
                 *[a for o in overrides for a in ("--set", o)]],
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            fedkt_wall = time.perf_counter() - start
            if run.returncode != 0:
                raise FedktError(f"fedkt run failed: {run.stderr.strip().splitlines()[-1:]}")
            summary = json.loads((out / "summary.json").read_text())
            rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
        in_rounds = sum(r["wall_seconds"] for r in rounds)
        print_table(
            f"FedAvg, {args.dataset}, {args.clients} clients ({n_rows} rows, Dirichlet "
            f"{args.alpha}), {args.rounds} rounds x {args.epochs} epoch(s), mlp, seed {args.seed}",
            ["framework", "wall s (process)", "training s", "test accuracy"],
            [
                [f"pfl {p['pfl']}", f"{pfl_wall:.1f}", f"{p['train_s']:.1f}",
                 f"{100 * p['test_accuracy']:.1f}%"],
                ["fedkt (Flower simulation)", f"{fedkt_wall:.1f}", f"{in_rounds:.1f}",
                 f"{100 * summary['global_accuracy']:.1f}%"],
            ],
        )  # fmt: skip
        print(
            "training s: pfl's training loop; fedkt's time inside rounds (training, messages, "
            "every client's evaluation)"
        )
        return 0
    except (FedktError, OSError, subprocess.TimeoutExpired) as exc:
        return fail("benchmarks.pfl_side_by_side", exc)


if __name__ == "__main__":
    command(main, "benchmarks.pfl_side_by_side")
