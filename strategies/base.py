"""The interface the round loop drives, and what every fedkt strategy shares.

Flower's ``Strategy`` returns ``(ArrayRecord | None, MetricRecord | None)`` from
aggregation; the loop needs more than metrics (who took part, fusion weights,
rejections, whether the round was skipped), so fedkt's strategies keep Flower's
configure/aggregate shape but return a typed :class:`fedkt.rounds.RoundReport`, and
expose ``state_dict()`` / ``load_state_dict()`` for resuming. Flower's own strategies
(FedAvg, FedProx, FedAdam) are wrapped to the same interface
(:mod:`fedkt.strategies.weight_averaging`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedkt import protocol as P
from fedkt.rounds import RoundReport


def through_codec(record: ArrayRecord, step: Callable[[dict], dict]) -> ArrayRecord:
    """``record``'s arrays through one step of a method's weight codec (its ``encode`` or
    ``decode``, FedKD's SVD): the one conversion the ClientApp and the server share."""
    out = step({k: a.numpy() for k, a in record.items()})
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()})


def round_config(server_round: int) -> ConfigRecord:
    """The ``config`` record every fedkt message carries."""
    return ConfigRecord({P.SERVER_ROUND: server_round})


def partition_of(msg: Message) -> int:
    """The partition id a reply reports (-1 when it reports none)."""
    try:
        return int(msg.content[P.METRICS][P.PARTITION_ID])
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return -1


class RoundStrategy(ABC):
    """One round = ``configure_train`` -> replies -> ``aggregate_train`` ->
    ``configure_evaluate`` -> replies (scored by the loop from the clients' metrics)."""

    @abstractmethod
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, grid: Grid
    ) -> Iterable[Message]:
        """Train messages for the nodes ``grid`` shows (the round's sample)."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, RoundReport]:
        """The new global arrays (None: unchanged) and what the round produced."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate messages for the nodes ``grid`` shows (those that replied)."""

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a resume (arrays and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def summary(self) -> str:
        """One line for the log."""
        return type(self).__name__


class LocalOnly(RoundStrategy):
    """No exchange: clients train and evaluate their own models."""

    def _messages(self, server_round: int, grid: Grid, kind: str) -> list[Message]:
        content = RecordDict({P.CONFIG: round_config(server_round)})
        return [Message(content, dst_node_id=n, message_type=kind) for n in grid.get_node_ids()]

    def configure_train(self, server_round: int, arrays: ArrayRecord, grid: Grid) -> list[Message]:
        return self._messages(server_round, grid, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, RoundReport]:
        return None, RoundReport()

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, grid: Grid
    ) -> list[Message]:
        return self._messages(server_round, grid, MessageType.EVALUATE)

    def summary(self) -> str:
        return "local training only"
