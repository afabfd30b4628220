"""Per-message cost of the ClientApp: milliseconds per train and per evaluate message.

Calls the ClientApp's functions in this process with real Flower messages (handshake
once per client, then rounds of train + evaluate with a fused target), as a simulation
worker or SuperNode serving many clients does, and reports the median over the
messages after the first round (which pays the one-time resolve, data layout and model
builds). Settings: the built-in default (KnFu, mlp, digits), the same with no training
epochs (what remains is the per-message work: records, config, models, data, evaluation),
and FedProto with two model tiers, where per-message config resolution once built five
models per message.

    python -m benchmarks.client_message [--clients 4] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.harness import command, config, fail, print_table
from fedkt.errors import FedktError

NO_TRAINING = ["train.epochs=0", "distill.epochs=0"]  # what is left is the per-message work
SETTINGS = {
    "knfu (default)": [],
    "knfu, 0 epochs": NO_TRAINING,
    "fedproto, 2 tiers, 0 epochs": [
        *NO_TRAINING,
        "strategy=fedproto",
        "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]",
    ],
    "fedproto, 2 tiers": [
        "strategy=fedproto",
        "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]",
    ],
}


def measure(overrides: Sequence[str], clients: int, rounds: int) -> dict[str, float]:
    """Median ms per train and per evaluate message after the first round."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedkt import protocol as P
    from fedkt.clients import app as client_app

    # Outside a Flower process, messages need a task identity to be created at all.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    cfg = config(None, [f"num_clients={clients}", *overrides])
    contexts = [
        Context(
            run_id=1,
            node_id=100 + p,
            node_config={P.PARTITION_ID: p},
            state=RecordDict(),
            run_config={},
        )
        for p in range(clients)
    ]
    hello = RecordDict({P.EXPERIMENT: ConfigRecord({P.EXPERIMENT_KEY: cfg.to_json()})})
    for p, ctx in enumerate(contexts):
        client_app.handshake(
            Message(hello, dst_node_id=100 + p, message_type=MessageType.QUERY), ctx
        )
    train_ms: list[float] = []
    eval_ms: list[float] = []
    for server_round in range(1, rounds + 1):
        conf = ConfigRecord({P.SERVER_ROUND: server_round})
        values = []
        for p, ctx in enumerate(contexts):
            start = time.perf_counter()
            reply = client_app.train(
                Message(
                    RecordDict({P.CONFIG: conf}),
                    dst_node_id=100 + p,
                    message_type=MessageType.TRAIN,
                ),
                ctx,
            )
            if server_round > 1:
                train_ms.append(1000 * (time.perf_counter() - start))
            values.append(reply.content[P.KNOWLEDGE][P.VALUES].numpy())
        target = np.mean(values, axis=0).astype(np.float32)
        for p, ctx in enumerate(contexts):
            content = RecordDict({P.CONFIG: conf, P.TARGET: ArrayRecord({P.VALUES: Array(target)})})
            start = time.perf_counter()
            client_app.evaluate(
                Message(content, dst_node_id=100 + p, message_type=MessageType.EVALUATE), ctx
            )
            if server_round > 1:
                eval_ms.append(1000 * (time.perf_counter() - start))
    return {"train_ms": statistics.median(train_ms), "evaluate_ms": statistics.median(eval_ms)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.client_message", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="clients served by this process (default 4)"
    )
    parser.add_argument(
        "--rounds", type=int, default=11, help="rounds; the first is not counted (default 11)"
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rounds < 2:
        parser.error("--clients must be >= 1 and --rounds >= 2")
    try:
        rows = []
        for name, overrides in SETTINGS.items():
            m = measure(overrides, args.clients, args.rounds)
            rows.append((name, f"{m['train_ms']:.1f}", f"{m['evaluate_ms']:.1f}"))
    except FedktError as exc:
        return fail(parser.prog, exc)
    print_table(
        f"ClientApp cost per message ({args.clients} clients, median of rounds 2-{args.rounds})",
        ["setting", "train ms", "evaluate ms"],
        rows,
    )
    return 0


if __name__ == "__main__":
    command(main, "benchmarks.client_message")
