"""One Flower strategy for every knowledge-based method (and for local-only training).

The method is whatever parts it is built from (``fedkt.recipes``): the strategy only
samples clients, validates the knowledge they send, calls the fusion, and addresses one
personalised target per client with Flower's Message API.

Round shape, following KnFu's four steps on Flower's train/evaluate phases:
``train``    -> clients train locally and reply knowledge on the transfer set;
``aggregate_train``  -> validate + fuse, one target per participant;
``evaluate`` -> each participant receives its own target, fine-tunes on it, evaluates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedkt import protocol as P
from fedkt.errors import KnowledgeError
from fedkt.recipes import ResolvedStrategy
from fedkt.seeding import rng


class KnowledgeTransfer(Strategy):
    """Knowledge exchange + server-side fusion, personalised per client.

    Parameters
    ----------
    recipe : ResolvedStrategy
        The parts (knowledge, fusion, loss) this run composes.
    nodes : dict[int, int]
        Partition id -> Flower node id, learnt from the handshake.
    num_classes, transfer_size : int
        Expected shape of every client's knowledge.
    fraction, min_clients, seed
        Client sampling per round (seeded, by partition id, so reproducible).
    """

    def __init__(
        self,
        recipe: ResolvedStrategy,
        nodes: dict[int, int],
        num_classes: int,
        transfer_size: int,
        fraction: float = 1.0,
        min_clients: int = 1,
        seed: int = 0,
    ) -> None:
        self.recipe = recipe
        self.nodes = dict(sorted(nodes.items()))
        self.num_classes = num_classes
        self.transfer_size = transfer_size
        self.fraction = fraction
        self.min_clients = min_clients
        self.seed = seed
        self.knowledge = recipe.make_knowledge() if recipe.exchanges_knowledge else None
        self.fusion = recipe.make_fusion() if recipe.exchanges_knowledge else None
        self.targets: dict[int, np.ndarray] = {}
        self.participants: list[int] = []
        self.weights: np.ndarray | None = None  # (N, N) over partition ids, NaN = absent
        self.rejected: list[dict[str, object]] = []
        self.failures = 0
        self.skipped = False

    # ------------------------------------------------------------------ train
    def sample(self, server_round: int) -> list[int]:
        """Partition ids taking part in ``server_round``."""
        pids = list(self.nodes)
        k = min(len(pids), max(self.min_clients, math.ceil(self.fraction * len(pids))))
        if k == len(pids):
            return pids
        return sorted(rng(self.seed, "sample", server_round).choice(pids, size=k, replace=False).tolist())

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.targets, self.participants, self.weights = {}, [], None
        self.failures, self.skipped = 0, False
        cfg = ConfigRecord({"round": server_round, **dict(config)})
        return [
            Message(RecordDict({P.ROUND_RECORD: cfg}), dst_node_id=self.nodes[pid], message_type=MessageType.TRAIN)
            for pid in self.sample(server_round)
        ]

    def _valid_knowledge(self, server_round: int, msg: Message) -> tuple[int, np.ndarray | None, int] | None:
        """(partition id, knowledge, sample count) of a well-formed reply; records why otherwise."""
        if msg.has_error():
            self.failures += 1
            log(WARNING, "round %s: client on node %s failed: %s", server_round, msg.metadata.src_node_id, msg.error.reason)
            return None
        try:
            metrics = msg.content[P.METRICS_RECORD]
            pid, count = int(metrics[P.PARTITION_ID]), int(metrics[P.NUM_EXAMPLES])
            if self.nodes.get(pid) != msg.metadata.src_node_id:
                raise KnowledgeError(f"reply claims partition {pid}, which belongs to another node")
            if count <= 0:
                raise KnowledgeError(f"reply reports {count} training samples")
            if self.knowledge is None:
                return pid, None, count
            array = msg.content[P.KNOWLEDGE_RECORD][P.ARRAY_KEY].numpy()
            return pid, self.knowledge.validate(array, self.transfer_size, self.num_classes), count
        except (KnowledgeError, KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, KnowledgeError) else f"malformed reply ({type(exc).__name__}: {exc})"
            self.rejected.append({"round": server_round, "node": msg.metadata.src_node_id, "reason": reason})
            log(WARNING, "round %s: rejected knowledge from node %s: %s", server_round, msg.metadata.src_node_id, reason)
            return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = [v for msg in replies if (v := self._valid_knowledge(server_round, msg)) is not None]
        accepted.sort(key=lambda item: item[0])
        self.participants = [pid for pid, _, _ in accepted]
        if len(accepted) < self.min_clients:
            self.skipped = True
            log(WARNING, "round %s: %d valid replies < min_clients=%d, no fusion", server_round, len(accepted), self.min_clients)
            return None, None
        if self.fusion is not None:
            probs = np.stack([k for _, k, _ in accepted])
            counts = np.asarray([c for _, _, c in accepted], dtype=np.float64)
            result = self.fusion.fuse(probs, counts)
            self.targets = {pid: result.targets[i] for i, pid in enumerate(self.participants)}
            n = max(self.nodes) + 1
            full = np.full((n, n), np.nan)
            idx = np.asarray(self.participants)
            full[np.ix_(idx, idx)] = result.weights
            self.weights = full
        return None, MetricRecord({"participants": len(self.participants)})

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        messages = []
        for pid in self.participants:
            content = RecordDict({P.ROUND_RECORD: ConfigRecord({"round": server_round, **dict(config)})})
            if pid in self.targets:
                content[P.TARGET_RECORD] = ArrayRecord({P.ARRAY_KEY: Array(self.targets[pid])})
            messages.append(Message(content, dst_node_id=self.nodes[pid], message_type=MessageType.EVALUATE))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        accs = [float(m.content[P.METRICS_RECORD]["accuracy"]) for m in replies if not m.has_error()]
        if not accs:
            return None
        return MetricRecord({"alma": float(np.mean(accs)), "worst_client_accuracy": float(np.min(accs))})

    def summary(self) -> None:
        r = self.recipe
        log(INFO, "\t├── strategy %s: knowledge=%s fusion=%s loss=%s", r.name, r.knowledge, r.fusion, r.loss)
        log(INFO, "\t└── %d clients, fraction %.2f, min_clients %d", len(self.nodes), self.fraction, self.min_clients)
