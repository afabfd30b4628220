"""One Flower-facing strategy for every knowledge-based method.

The method (:class:`fedkt.method.Method`, resolved into an :class:`Experiment`) decides
everything method-specific: the parts, the transfer rows of a round, the server step.
This strategy only validates what clients send, calls the fusion and the method's
server step, and addresses one personalised target per client with Flower's Message API.
Client sampling happens outside (the round loop shows ``configure_train`` only the
sampled nodes), so every strategy samples the same clients under one seed.

Round shape, following KnFu's four steps on Flower's train/evaluate phases:
``train`` -> clients train locally and reply knowledge (and weights, for methods that
share them); ``aggregate_train`` -> validate, fuse, server step; ``evaluate`` -> each
participant receives its own target (and/or the server's model), distils, evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedkt import protocol as P
from fedkt.errors import KnowledgeError
from fedkt.experiment import Experiment
from fedkt.learner import initial_model
from fedkt.rounds import Rejection, RoundReport
from fedkt.strategies.base import RoundStrategy, round_config
from fedkt.training import resolve_device

Accepted = tuple[int, np.ndarray, np.ndarray, Message]  # partition, knowledge, counts, reply


class KnowledgeTransfer(RoundStrategy):
    """Knowledge exchange + server-side fusion, personalised per client.

    Parameters
    ----------
    exp : Experiment
        The resolved experiment (method, parts, data shape).
    nodes : dict[int, int]
        Partition id -> Flower node id, learnt from the handshake.
    """

    def __init__(self, exp: Experiment, nodes: dict[int, int]) -> None:
        assert exp.knowledge is not None and exp.fusion is not None
        self.exp = exp
        self.method = exp.method
        self.knowledge = exp.knowledge
        self.fusion = exp.fusion
        self.nodes = dict(sorted(nodes.items()))
        self.partition_of = {node: pid for pid, node in self.nodes.items()}
        self.min_clients = exp.config.min_clients
        self.targets: dict[int, np.ndarray] = {}
        self.participants: list[int] = []
        # The server's copy of the model, for methods that share weights (averaged into,
        # then handed to the method's server step).
        self.model = None
        if self.method.shares_weights:
            self.model = initial_model(exp)
            self.model.to(resolve_device(exp.config.device))

    # ------------------------------------------------------------------ train
    def configure_train(self, server_round: int, arrays: ArrayRecord, grid: Grid) -> list[Message]:
        self.targets, self.participants = {}, []
        content = RecordDict({P.CONFIG: round_config(server_round)})
        if self.method.shares_weights:
            content[P.ARRAYS] = arrays
        return [
            Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
            for node in sorted(grid.get_node_ids(), key=lambda n: self.partition_of.get(n, n))
            if node in self.partition_of
        ]

    def _accept(self, msg: Message, rows: int, width: int | None) -> Accepted:
        """(partition id, knowledge, counts, reply) of a well-formed reply; raises otherwise."""
        metrics = msg.content[P.METRICS]
        pid, count = int(metrics[P.PARTITION_ID]), float(metrics[P.NUM_EXAMPLES])
        if self.nodes.get(pid) != msg.metadata.src_node_id:
            raise KnowledgeError(
                f"reply claims partition {pid}, which belongs to another node", "identity"
            )
        if not count > 0:
            raise KnowledgeError(f"reply reports {count:g} training samples", "counts")
        record = msg.content[P.KNOWLEDGE]
        counts = record[P.COUNTS].numpy() if P.COUNTS in record else None
        values, counts = self.knowledge.validate(
            record[P.VALUES].numpy(), counts, rows, self.exp.num_classes
        )
        if width is not None and values.shape[1] != width:
            raise KnowledgeError(
                f"knowledge has width {values.shape[1]}, other clients send {width}", "shape"
            )
        if self.model is not None:
            expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
            try:
                shapes = {k: tuple(a.shape) for k, a in msg.content[P.ARRAYS].items()}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise KnowledgeError(f"unusable weights ({exc})") from None
            if shapes != expected:
                raise KnowledgeError(
                    "unusable weights (its weights do not match the global model's layers)"
                )
        return pid, values, (np.asarray([count]) if counts is None else counts), msg

    def accepted(
        self, server_round: int, replies: Iterable[Message], report: RoundReport
    ) -> list[Accepted]:
        """Valid replies in partition order; every other reply is recorded in ``report``."""
        rows = self.exp.knowledge_rows(server_round)
        out: list[Accepted] = []
        width = None
        for msg in replies:
            if msg.has_error():
                continue
            try:
                item = self._accept(msg, rows, width)
            except KnowledgeError as exc:
                self._reject(server_round, msg, str(exc), exc.reason, report)
                continue
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                self._reject(
                    server_round,
                    msg,
                    f"malformed reply ({type(exc).__name__}: {exc})",
                    "malformed",
                    report,
                )
                continue
            out.append(item)
            width = item[1].shape[1]
        return sorted(out, key=lambda item: item[0])

    @staticmethod
    def _reject(
        server_round: int, msg: Message, reason: str, category: str, report: RoundReport
    ) -> None:
        report.rejected.append(Rejection(msg.metadata.src_node_id, reason, category))
        log(
            WARNING,
            "round %s: rejected reply from node %s: %s",
            server_round,
            msg.metadata.src_node_id,
            reason,
        )

    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, RoundReport]:
        report = RoundReport()
        accepted = self.accepted(server_round, replies, report)
        self.participants = report.participants = [pid for pid, _, _, _ in accepted]
        if len(accepted) < self.min_clients:
            report.skipped = True
            log(
                WARNING,
                "round %s: %d valid replies < min_clients=%d, no fusion",
                server_round,
                len(accepted),
                self.min_clients,
            )
            return None, report
        result = self.fusion.fuse_round(
            [v for _, v, _, _ in accepted], [c for _, _, c, _ in accepted]
        )
        report.fusion_weights = np.asarray(result.weights, dtype=float)
        arrays = None
        if self.model is not None:
            averaged = aggregate_arrayrecords(
                [
                    RecordDict({P.ARRAYS: m.content[P.ARRAYS], P.METRICS: m.content[P.METRICS]})
                    for *_, m in accepted
                ],
                P.NUM_EXAMPLES,
            )
            self.model.load_state_dict(averaged.to_torch_state_dict())
        targets, report.metrics = self.method.server_step(
            self.exp, self.model, result.targets, server_round
        )
        if self.model is not None:
            arrays = ArrayRecord(self.model.state_dict())
        self.targets = (
            {} if targets is None else {pid: targets[i] for i, pid in enumerate(self.participants)}
        )
        return arrays, report

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, grid: Grid
    ) -> list[Message]:
        """Every participant that sent valid knowledge is evaluated, with its target
        (and the server's model, for methods that share weights)."""
        messages = []
        for pid in self.participants:
            content = RecordDict({P.CONFIG: round_config(server_round)})
            if pid in self.targets:
                content[P.TARGET] = ArrayRecord({P.VALUES: Array(self.targets[pid])})
            if self.method.shares_weights:
                content[P.ARRAYS] = arrays
            messages.append(
                Message(content, dst_node_id=self.nodes[pid], message_type=MessageType.EVALUATE)
            )
        return messages

    def state_dict(self) -> dict[str, Any]:
        """A fusion that learns across rounds (FedTGP's prototype generator) keeps its state."""
        state = self.fusion.state_dict()
        return {"fusion": state} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fusion.load_state_dict(state.get("fusion", {}))

    def summary(self) -> str:
        parts = self.exp.parts
        return (
            f"strategy {self.exp.name}: knowledge={parts['knowledge']} fusion={parts['fusion']} "
            + (f"loss={parts['loss']}" if parts["loss"] else "target adopted as it is")
            + f", {len(self.nodes)} clients, min_clients {self.min_clients}"
        )
