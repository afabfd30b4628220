"""Replay one finished cell of a comparison in this process, client by client, and print
what the round protocol does to each client's network.

Why: a comparison's report says *that* a strategy left clients behind; this says *why*.
Per client and round it prints the accuracy after local training and after the exchange,
the entropy of the fused target the client distilled, the share of that target's mass on
the classes the client owns, and the share of dead ReLU units (units that output zero
for every one of the client's first 512 training samples), after local training and
after the exchange. A network whose units all die predicts one class for every input and
cannot recover, since dead units pass no gradient.

The replay runs the same Learner calls as a simulated round (train, knowledge, fusion,
fine-tune, evaluate) with one torch thread, as a simulation's client actor does; it is a
diagnostic, not the engine. Its accuracies equal the cell's metrics.jsonl (checked on
runs/mnist-v3 FKD seed 3, round 1: all ten clients to the digit).

    python simulations/diagnose_cell.py runs/mnist/cells/fkd/dirichlet-alpha=0.1/seed-3 \\
        --rounds 2 --clients 9 --set distill.lr=0.01
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedkt.errors import FedktError
from fedkt.experiment import load_experiment
from fedkt.learner import Learner


def dead_unit_share(model: nn.Module, x: torch.Tensor) -> list[float]:
    """For each ReLU of ``model``: the share of its units (channels of a conv map, units of
    a dense layer) that are zero for every sample of ``x``."""
    outputs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    shares = []
    for out in outputs:
        alive = (out.flatten(2) > 0).any(dim=2) if out.dim() > 2 else out > 0
        shares.append(round(1.0 - alive.any(dim=0).float().mean().item(), 3))
    return shares


def entropy(p: np.ndarray) -> float:
    """Mean entropy (nats) of the rows of ``p``."""
    return float(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1).mean())


def replay(cell: Path, rounds: int, clients: set[int] | None, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    exp = load_experiment(str(cell / "config.yaml"), overrides)
    if exp.fusion is None:
        raise FedktError(f"{exp.name} exchanges no knowledge: nothing to diagnose in its exchange")
    learners = [Learner(exp, i) for i in range(exp.config.num_clients)]
    for r in range(1, rounds + 1):
        trained = [lr.train(r) for lr in learners]
        dead_before = [
            dead_unit_share(lr.receiving_model, lr.data.train_x[:512]) for lr in learners
        ]
        shared = [lr.shared_knowledge(r) for lr in learners]
        fused = exp.fusion.fuse_round([v for v, _ in shared], [c for _, c in shared])
        for i, lr in enumerate(learners):
            target = np.asarray(fused.targets[i])
            step = lr.finetune(target, r)
            if clients is not None and i not in clients:
                continue
            owned = np.bincount(lr.data.train_y.numpy(), minlength=exp.num_classes) > 0
            row = {
                "round": r,
                "client": i,
                "train_samples": len(lr.data.train_y),
                "local_accuracy": round(trained[i]["local_accuracy"], 3),
                "accuracy": round(lr.evaluate()["accuracy"], 3),
                "train_loss": round(trained[i]["train_loss"], 3),
                "distill_loss": round(step["distill_loss"], 3),
                "target_entropy": round(entropy(target), 3),
                "target_mass_on_own_classes": round(float(target[..., owned].sum(-1).mean()), 3),
                "dead_units_after_training": dead_before[i],
                "dead_units": dead_unit_share(lr.receiving_model, lr.data.train_x[:512]),
            }
            print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cell", type=Path, help="a finished cell's folder (holds config.yaml)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds to replay (default 2)")
    parser.add_argument(
        "--clients", type=int, nargs="*", help="clients to print (default: every client)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="change the cell's config for the replay (what-if)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.cell / "config.yaml").is_file():
        print(f"diagnose_cell: {args.cell} has no config.yaml (not a run folder)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("diagnose_cell: --rounds must be at least 1", file=sys.stderr)
        return 2
    try:
        replay(args.cell, args.rounds, set(args.clients) if args.clients else None, args.overrides)
    except FedktError as exc:
        print(f"diagnose_cell: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
