"""Scale: wall time per round and peak memory from 10 to 10,000 simulated clients.

Every client keeps a personalised model (KnFu: each distils its own fused target), and
its model exists only once the client has been sampled: until then a client is a
partition id and a config, and its initial weights are rebuilt from the seed when it
is first called. So with 10,000 clients and 1% sampled per round, memory should grow
with the clients *used* so far (their stored models), not with the idle ones. The
table shows, per point: setup (engine start, data layout, the handshake of each node when
it is first sampled), the mean round, the peak memory of the whole process tree (driver,
Ray, workers; PSS), how many clients hold a model at the end, and what their weights take.

Each point runs in a fresh subprocess, so its peak is its own.

    python -m benchmarks.scale                                   # 10, 100, 1,000 all; 10,000 at 1%
    (with 100 all and 10,000 at 1%, both 100 clients per round, it also prints what an
    idle client costs)
    python -m benchmarks.scale --points 10:1 100:1 --rounds 2     # a quick look
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

from benchmarks.harness import (
    GIB,
    MIB,
    PeakMemory,
    command,
    config,
    fail,
    print_table,
    simulate_timed,
)
from fedkt.errors import FedktError

BASE = "simulations/knfu_paper/mnist.yaml"


def overrides(args: argparse.Namespace, clients: int, fraction: float) -> list[str]:
    # Two classes per client (pathological label skew) works at every size: 10,000 clients
    # of MNIST hold about 6 samples each. Per-client work is kept small on purpose: the
    # benchmark measures the platform, not convolutions.
    return [
        f"dataset={args.dataset}",
        f"num_clients={clients}",
        f"fraction={fraction}",
        f"rounds={args.rounds}",
        f"seed={args.seed}",
        "strategy=knfu",
        *(
            [f"partition.by={args.partition_by}"]
            if args.partition_by
            else ["partition.name=pathological", "partition.classes_per_client=2"]
        ),
        "partition.samples_per_client=null",
        f"transfer.size={args.transfer_size}",
        "evaluation.client_test_size=20",
        "evaluation.global_test_size=200",
        "train.epochs=1",
        "distill.epochs=1",
        f"model.name={args.model}",
        "round_timeout=3600",
        "wait_for_nodes=600",
    ]


def run_point(args: argparse.Namespace) -> int:
    """In the child: one simulation; its figures as JSON on stdout's last line."""
    clients, fraction = args.run_point
    cfg = config(BASE, overrides(args, int(clients), float(fraction)))
    from fedkt.data.federation import federation_for
    from fedkt.models import build_model, count_parameters

    fed = federation_for(cfg)
    model_bytes = 4 * count_parameters(
        build_model(cfg.model.name, fed.input_shape, fed.num_classes)
    )
    with tempfile.TemporaryDirectory(prefix="fedkt-scale-") as out:
        run = simulate_timed(cfg, out)
        used = {
            json.loads(line)["client"]
            for line in (Path(out) / "metrics.jsonl").read_text().splitlines()
        }
    rounds = run["rounds"]
    print(
        json.dumps(
            {
                "wall": run["wall"],
                "round_walls": [r["wall_seconds"] for r in rounds],
                "setup": run["wall"] - sum(r["wall_seconds"] for r in rounds),
                "participants": [r["participants"] for r in rounds],
                "failed": sum(r["failed"] for r in rounds),
                "clients_with_model": len(used),
                "model_bytes": model_bytes,
                "alma": run["summary"]["alma"],
            }
        )
    )
    return 0


def _point(text: str) -> tuple[int, float]:
    try:
        clients, _, fraction = text.partition(":")
        n, f = int(clients), float(fraction or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not CLIENTS:FRACTION (e.g. 10000:0.01)"
        ) from None
    if n < 1 or not 0 < f <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: clients must be >= 1 and 0 < fraction <= 1")
    return n, f


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--points",
        type=_point,
        nargs="+",
        default=[(10, 1.0), (100, 1.0), (1000, 1.0), (10000, 0.01)],
        help="CLIENTS:FRACTION sampled per round (default: 10:1 100:1 1000:1 10000:0.01)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="cnn-small")
    parser.add_argument("--transfer-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--partition-by",
        metavar="COLUMN",
        help="a natural partition by this column (e.g. user, with benchmarks.synthetic_table)",
    )
    parser.add_argument("--run-point", type=_point, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    try:
        if args.run_point:
            return run_point(args)
        for n, f in args.points:
            config(BASE, overrides(args, n, f))  # a bad point is an error before anything runs
    except FedktError as exc:
        return fail(parser.prog, exc)
    rows = []
    measured: list[dict] = []
    for n, f in args.points:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--run-point",
            f"{n}:{f}",
            "--rounds",
            str(args.rounds),
            "--dataset",
            args.dataset,
            "--model",
            args.model,
            "--transfer-size",
            str(args.transfer_size),
            "--seed",
            str(args.seed),
            *(["--partition-by", args.partition_by] if args.partition_by else []),
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        with PeakMemory(proc.pid) as mem:
            stdout, _ = proc.communicate()
        if proc.returncode != 0:
            print(
                f"{parser.prog}: error: the {n}-client point failed (exit {proc.returncode})",
                file=sys.stderr,
            )
            return 1
        r = json.loads(stdout.strip().splitlines()[-1])
        print(f"peak with {n:,} clients: {mem.composition()}", flush=True)
        later = r["round_walls"][1:] or r["round_walls"]
        stored = r["clients_with_model"] * r["model_bytes"]
        rows.append(
            [
                f"{n:,}",
                f"{f:g}",
                f"{max(r['participants']):,}",
                f"{r['setup']:.1f}",
                f"{sum(later) / len(later):.1f}",
                f"{mem.peak / GIB:.2f}",
                f"{r['clients_with_model']:,}",
                f"{stored / MIB:.0f}",
                r["failed"],
                f"{100 * r['alma']:.1f}",
                f"{time.perf_counter() - start:.0f}",
            ]
        )
        measured.append(
            {
                "clients": n,
                "active": max(r["participants"]),
                "peak": mem.peak,
                "models": r["clients_with_model"],
                "model_bytes": r["model_bytes"],
            }
        )
        print(f"{n} clients at {f:g}: peak {mem.peak / GIB:.2f} GiB", file=sys.stderr)
    print_table(
        f"scale: KnFu, {args.model} per client (personalised), {args.rounds} rounds, "
        f"{args.dataset}",
        [
            "clients",
            "fraction",
            "per round",
            "setup s",
            "s / round",
            "peak GiB",
            "clients with a model",
            "their weights MiB",
            "failed",
            "ALMA %",
            "total s",
        ],
        rows,
    )
    for line in idle_cost(measured):
        print(line)
    return 0


def idle_cost(measured: list[dict]) -> list[str]:
    """Memory per idle client, from two points with the same clients per round and
    different federation sizes: the peak difference, less the difference in stored models,
    over the extra clients that never held a model."""
    lines = []
    for small in measured:
        for big in measured:
            if big["clients"] > small["clients"] and big["active"] == small["active"]:
                extra_models = big["models"] - small["models"]
                idle = big["clients"] - small["clients"] - extra_models
                rest = big["peak"] - small["peak"] - extra_models * big["model_bytes"]
                lines.append(
                    f"{big['clients']:,} vs {small['clients']:,} clients, {big['active']:,} per "
                    "round: "
                    f"{(big['peak'] - small['peak']) / MIB:+.0f} MiB peak, of which "
                    f"{extra_models:,} more stored models "
                    f"{extra_models * big['model_bytes'] / MIB:.0f} MiB; {idle:,} idle clients: "
                    f"{rest / max(idle, 1) / 1024:.1f} KiB each (one model: "
                    f"{big['model_bytes'] / 1024:.0f} KiB)"
                )
    return lines


if __name__ == "__main__":
    command(main, "benchmarks.scale")
