"""One Flower strategy for every knowledge-based method.

The method is whatever parts it is built from (``fedkt.recipes``): the strategy only
validates the knowledge clients send, calls the fusion, and addresses one personalised
target per client with Flower's Message API. Client sampling happens outside (the round
loop hands ``configure_train`` a grid showing only the sampled nodes), so every
strategy, including Flower's own FedAvg, samples the same clients under one seed.

Round shape, following KnFu's four steps on Flower's train/evaluate phases:
``train``    -> clients train locally and reply knowledge;
``aggregate_train``  -> validate + fuse, one target per participant;
``evaluate`` -> each participant receives its own target, distils it, evaluates.
"""

from __future__ import annotations

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


class KnowledgeTransfer(Strategy):
    """Knowledge exchange + server-side fusion, personalised per client.

    Parameters
    ----------
    recipe : ResolvedStrategy
        The parts (knowledge, fusion, loss) this run composes.
    nodes : dict[int, int]
        Partition id -> Flower node id, learnt from the handshake.
    num_classes : int
        Number of classes (expected knowledge width).
    rows : int
        Expected knowledge rows for transfer-set knowledge (transfer size or subset).
    min_clients : int
        Fewest valid replies for a round's fusion to take place.
    """

    def __init__(self, recipe: ResolvedStrategy, nodes: dict[int, int], num_classes: int, rows: int, min_clients: int = 1) -> None:
        self.recipe = recipe
        self.nodes = dict(sorted(nodes.items()))
        self.partition_of = {node: pid for pid, node in self.nodes.items()}
        self.num_classes = num_classes
        self.knowledge = recipe.make_knowledge()
        self.fusion = recipe.make_fusion()
        self.rows = num_classes if self.knowledge.domain == "class" else rows
        self.min_clients = min_clients
        self.targets: dict[int, np.ndarray] = {}
        self.participants: list[int] = []
        # (k, k) fusion weights over this round's participants (partition ids in
        # ``participants`` order): O(participants^2), never O(clients^2).
        self.weights: np.ndarray | None = None
        self.rejected: list[dict[str, object]] = []
        self.skipped = False
        self.accepted_replies: dict[int, Message] = {}

    def _config(self, server_round: int, config: ConfigRecord) -> ConfigRecord:
        return ConfigRecord({**dict(config), P.SERVER_ROUND: server_round})

    # ------------------------------------------------------------------ train
    def train_content(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        return RecordDict({P.CONFIG: self._config(server_round, config)})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.targets, self.participants, self.weights, self.skipped = {}, [], None, False
        self.accepted_replies = {}
        content = self.train_content(server_round, arrays, config)
        return [
            Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
            for node in sorted(grid.get_node_ids(), key=lambda n: self.partition_of.get(n, n))
            if node in self.partition_of
        ]

    def reject(self, server_round: int, msg: Message, reason: str, category: str = "invalid") -> None:
        self.rejected.append({"round": server_round, "node": msg.metadata.src_node_id, "reason": reason, "category": category})
        log(WARNING, "round %s: rejected reply from node %s: %s", server_round, msg.metadata.src_node_id, reason)

    def _accept(self, server_round: int, msg: Message, width: int | None) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(partition id, knowledge, counts) of a well-formed reply; records why otherwise."""
        if msg.has_error():
            return None
        try:
            metrics = msg.content[P.METRICS]
            pid, count = int(metrics[P.PARTITION_ID]), float(metrics[P.NUM_EXAMPLES])
            if self.nodes.get(pid) != msg.metadata.src_node_id:
                raise KnowledgeError(f"reply claims partition {pid}, which belongs to another node", "identity")
            if not count > 0:
                raise KnowledgeError(f"reply reports {count:g} training samples", "counts")
            record = msg.content[P.KNOWLEDGE]
            counts = record[P.COUNTS].numpy() if P.COUNTS in record else None
            values, counts = self.knowledge.validate(record[P.VALUES].numpy(), counts, self.rows, self.num_classes)
            if width is not None and values.shape[1] != width:
                raise KnowledgeError(f"knowledge has width {values.shape[1]}, other clients send {width}", "shape")
            self.accepted_replies[pid] = msg
            return pid, values, (np.asarray([count]) if counts is None else counts)
        except (KnowledgeError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, KnowledgeError):
                self.reject(server_round, msg, str(exc), exc.reason)
            else:
                self.reject(server_round, msg, f"malformed reply ({type(exc).__name__}: {exc})", "malformed")
            return None

    def accepted_knowledge(self, server_round: int, replies: Iterable[Message]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        accepted: list[tuple[int, np.ndarray, np.ndarray]] = []
        width = None
        for msg in replies:
            item = self._accept(server_round, msg, width)
            if item is not None:
                accepted.append(item)
                width = item[1].shape[1]
        return sorted(accepted, key=lambda item: item[0])

    def fuse(self, accepted: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
        """Fuse, store one target per participant and the weight matrix; returns targets."""
        values = np.stack([v for _, v, _ in accepted])
        counts = np.stack([c for _, _, c in accepted])
        counts = counts[:, 0] if counts.shape[1] == 1 else counts
        result = self.fusion.fuse(values, counts)
        self.targets = {pid: result.targets[i] for i, pid in enumerate(self.participants)}
        self.weights = np.asarray(result.weights, dtype=float)
        return result.targets

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = self.accepted_knowledge(server_round, replies)
        self.participants = [pid for pid, _, _ in accepted]
        if len(accepted) < self.min_clients:
            self.skipped = True
            log(WARNING, "round %s: %d valid replies < min_clients=%d, no fusion", server_round, len(accepted), self.min_clients)
            return None, None
        self.fuse(accepted)
        return None, MetricRecord({"participants": len(self.participants)})

    # --------------------------------------------------------------- evaluate
    def evaluate_content(self, server_round: int, pid: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        content = RecordDict({P.CONFIG: self._config(server_round, config)})
        if pid in self.targets:
            content[P.TARGET] = ArrayRecord({P.VALUES: Array(self.targets[pid])})
        return content

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Every participant that sent valid knowledge is evaluated (with its target)."""
        return [
            Message(self.evaluate_content(server_round, pid, arrays, config), dst_node_id=self.nodes[pid], message_type=MessageType.EVALUATE)
            for pid in self.participants
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        accs = []
        for m in replies:
            try:
                accs.append(float(m.content[P.METRICS]["accuracy"]))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # an error reply or one without metrics: counted by the round loop
        if not accs:
            return None
        return MetricRecord({"alma": float(np.mean(accs)), "worst_client_accuracy": float(np.min(accs))})

    def summary(self) -> None:
        r = self.recipe
        log(INFO, "\t├── strategy %s: knowledge=%s fusion=%s loss=%s", r.name, r.knowledge, r.fusion, r.loss)
        log(INFO, "\t└── %d clients, min_clients %d", len(self.nodes), self.min_clients)
