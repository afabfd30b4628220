"""GPU check: the same client code on CPU and on CUDA, and a short KnFu simulation on CUDA.

Prints a table of training throughput (samples per second through local training,
knowledge extraction and distillation, the work a client does in a round) for each
device, with and without mixed precision on CUDA, then runs a short KnFu simulation
with ``device: cuda`` through Flower's simulation engine. Without CUDA the GPU rows are
skipped (and said so) and the script exits 0.

    python -m benchmarks.gpu_check                       # digits, cnn-small, 4 clients
    python -m benchmarks.gpu_check --model resnet8 --dataset mnist --clients 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.harness import command
from fedkt.config import ExperimentConfig, load_config
from fedkt.errors import FedktError
from fedkt.experiment import resolve
from fedkt.learner import Learner


def _config(args: argparse.Namespace, device: str, amp: bool) -> ExperimentConfig:
    return load_config(
        None,
        [
            f"dataset={args.dataset}",
            f"num_clients={args.clients}",
            f"rounds={args.rounds}",
            f"model={args.model}",
            f"device={device}",
            f"train.amp={str(amp).lower()}",
            f"seed={args.seed}",
            "strategy=knfu",
            f"train.epochs={args.epochs}",
            "distill.epochs=1",
        ],
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def client_throughput(cfg: ExperimentConfig) -> dict[str, float]:
    """One KnFu round's client work for every client (train, extract, distil the mean
    target), timed after a warm-up round; samples counted as rows passed through a model."""
    exp = resolve(cfg)
    learners = [Learner(exp, i) for i in range(cfg.num_clients)]

    def one_round(server_round: int) -> int:
        shared = []
        for lr in learners:
            lr.train(server_round)
            shared.append(lr.knowledge(server_round)[0])
        target = np.mean(shared, axis=0)
        for lr in learners:
            lr.finetune(target, server_round)
        return sum(
            lr.num_examples * cfg.train.epochs + len(target) * (1 + cfg.distill.epochs)
            for lr in learners
        )

    one_round(0)  # warm-up: CUDA context, cuDNN autotuning, allocator
    device = learners[0].device
    _sync(device)
    start = time.perf_counter()
    samples = one_round(1)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="cnn-small")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the CUDA simulation")
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated subset of cpu,cuda")
    parser.add_argument("--no-simulation", action="store_true", help="only the throughput table")
    args = parser.parse_args(argv)
    console = Console()
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    unknown = sorted(set(devices) - {"cpu", "cuda"})
    if unknown:
        parser.error(f"--devices: unknown device {unknown[0]!r} (use cpu and/or cuda)")
    has_cuda = torch.cuda.is_available()
    table = Table(title=f"client work per round: {args.clients} x {args.model} on {args.dataset}")
    for col in ("device", "amp", "samples", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    figures: dict[tuple[str, bool], dict[str, float]] = {}
    try:
        for device in devices:
            for amp in (False, True) if device == "cuda" else (False,):
                if device == "cuda" and not has_cuda:
                    table.add_row(device, str(amp), "-", "-", "skipped: no CUDA")
                    continue
                r = figures[(device, amp)] = client_throughput(_config(args, device, amp))
                table.add_row(
                    device,
                    str(amp),
                    f"{r['samples']:,}",
                    f"{r['seconds']:.2f}",
                    f"{r['samples_per_s']:,.0f}",
                )
        console.print(table)
        if ("cpu", False) in figures and ("cuda", False) in figures:
            console.print(
                "speed-up cuda/cpu: "
                f"{figures[('cuda', False)]['samples_per_s'] / figures[('cpu', False)]['samples_per_s']:.2f}x"  # noqa: E501
            )
        if has_cuda and "cuda" in devices and not args.no_simulation:
            from fedkt.server.simulation import simulate

            with tempfile.TemporaryDirectory(prefix="fedkt-gpu-") as out:
                start = time.perf_counter()
                summary = simulate(_config(args, "cuda", False), out)
                console.print(
                    f"KnFu simulation on CUDA: {args.clients} clients, {args.rounds} rounds, "
                    f"ALMA {100 * summary['alma']:.1f}%, {time.perf_counter() - start:.1f} s "
                    f"on {torch.cuda.get_device_name(0)}"
                )
        elif not has_cuda:
            console.print("CUDA not available here: GPU figures skipped.")
    except FedktError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    command(main, "benchmarks.gpu_check")
