"""Flower's own weight-averaging strategies (FedAvg, FedProx, FedAdam, ...) behind fedkt's
round interface, unchanged in what they compute.

A method names the Flower class (``Method.averaging``) and its keyword arguments
(``strategy.params``); any class of ``flwr.serverapp.strategy`` that aggregates arrays
fits. Sampling is done by the round loop, so the Flower strategy takes every node it
is shown.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import flwr.serverapp.strategy as flower_strategies
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fedkt import protocol as P
from fedkt.errors import ConfigError
from fedkt.experiment import Experiment
from fedkt.rounds import Rejection, RoundReport
from fedkt.strategies.base import RoundStrategy, partition_of, through_codec

_TAKE_EVERY_NODE = dict(
    fraction_train=1.0,
    fraction_evaluate=1.0,
    min_train_nodes=1,
    min_evaluate_nodes=1,
    min_available_nodes=1,
    weighted_by_key=P.NUM_EXAMPLES,
    arrayrecord_key=P.ARRAYS,
    configrecord_key=P.CONFIG,
)

# Flower offers no state API for its server optimisers; FedOpt (FedAdam, FedYogi,
# FedAdagrad) keeps its moments in these public attributes, set in its constructor.
# (``current_arrays`` is re-read from the arrays ``configure_train`` is given.)
_FEDOPT_STATE = ("m_t", "v_t")


def _reply_dtypes(replies: list[Message]) -> dict[str, Any]:
    """The dtype of each array the clients sent (read before aggregation: Flower's
    FedMedian and FedTrimmedAvg pop the arrays out of the replies they aggregate)."""
    return next(
        (
            {k: a.numpy().dtype for k, a in m.content[P.ARRAYS].items()}
            for m in replies
            if not m.has_error() and P.ARRAYS in m.content
        ),
        {},
    )


def _same_dtype(arrays: ArrayRecord, dtypes: dict[str, Any]) -> ArrayRecord:
    """``arrays`` in the dtype the clients replied with.

    Flower 1.39's FedAdam computes its step with a NumPy float64 scalar, which NumPy 2
    promotes float32 weights to float64 with: every later round would ship the global
    model at twice its size (measured: 16.2 MB down per round against FedAvg's 8.5 MB).
    The median of an integer tensor (FedMedian, Bulyan: BatchNorm's step counter) is a
    float. The server's model is cast back to the clients' dtype, as a PyTorch
    optimizer keeps parameters in their own dtype; FedOpt's moments stay float64. A
    no-op for FedAvg."""
    return ArrayRecord(
        OrderedDict(
            (k, Array(a.numpy().astype(dtypes[k], copy=False)) if k in dtypes else a)
            for k, a in arrays.items()
        )
    )


class WeightAveraging(RoundStrategy):
    """A Flower strategy (by class name) driven through fedkt's round interface."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        name = exp.method.averaging
        cls = getattr(flower_strategies, name or "", None)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"strategy {exp.name!r}: Flower has no strategy class {name!r}")
        self.flower: Strategy = cls(**_TAKE_EVERY_NODE, **exp.method.averaging_params(exp))
        # The global model of the current train round as the clients decode it: the base a
        # codec's replies are changes from (FedKD's updates). One model, replaced each round;
        # ``None`` when the codec sends weights or no model was sent.
        self._sent: dict[str, Any] | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, grid: Grid) -> list[Message]:
        messages = self.flower.configure_train(server_round, arrays, ConfigRecord(), grid)
        return self._encoded(server_round, list(messages), keep_base=True)

    def _encoded(
        self, server_round: int, messages: list[Message], keep_base: bool = False
    ) -> list[Message]:
        """The global model in ``messages`` through the method's weight codec (FedKD),
        encoded once however many messages share it; with ``keep_base``, and a codec whose
        clients send changes, also kept as the clients will decode it (their base)."""
        codec = self.exp.method.weight_codec(self.exp, server_round)
        if keep_base:
            self._sent = None
        if codec is None:
            return messages
        done: dict[int, ArrayRecord] = {}
        for m in messages:
            if P.ARRAYS in m.content:
                record = m.content[P.ARRAYS]
                if id(record) not in done:
                    new = through_codec(record, codec.encode)
                    done[id(record)] = done[id(new)] = new
                m.content[P.ARRAYS] = done[id(record)]
        if keep_base and codec.updates and len(set(map(id, done.values()))) == 1:
            sent = next(iter(done.values()))
            self._sent = codec.decode({k: a.numpy() for k, a in sent.items()})
        return messages

    def _decoded(
        self, server_round: int, replies: list[Message], report: RoundReport
    ) -> list[Message]:
        """Replies with their weights decoded by the method's weight codec; a reply whose
        weights cannot be decoded is left out and recorded in ``report``."""
        codec = self.exp.method.weight_codec(self.exp, server_round)
        if codec is None:
            return replies
        kept = []
        for m in replies:
            if not m.has_error() and P.ARRAYS in m.content:
                try:
                    decoded = through_codec(
                        m.content[P.ARRAYS], lambda record: codec.decode(record, self._sent)
                    )
                except (ValueError, TypeError, AttributeError) as exc:
                    report.rejected.append(
                        Rejection(
                            m.metadata.src_node_id, f"undecodable weights ({exc})", "malformed"
                        )
                    )
                    continue
                m.content[P.ARRAYS] = decoded
            kept.append(m)
        return kept

    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, RoundReport]:
        report = RoundReport()
        replies = self._decoded(server_round, replies, report)
        dtypes = _reply_dtypes(replies)
        arrays, _ = self.flower.aggregate_train(server_round, replies)
        report.participants = sorted(
            p for m in replies if not m.has_error() and (p := partition_of(m)) >= 0
        )
        return (None if arrays is None else _same_dtype(arrays, dtypes)), report

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, grid: Grid
    ) -> list[Message]:
        messages = self.flower.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
        return self._encoded(server_round, list(messages))

    def state_dict(self) -> dict[str, Any]:
        if not isinstance(self.flower, FedOpt):
            return {}
        return {
            k: getattr(self.flower, k) for k in _FEDOPT_STATE if getattr(self.flower, k) is not None
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.flower, FedOpt):
            for key in _FEDOPT_STATE:
                if key in state:
                    setattr(self.flower, key, state[key])

    def summary(self) -> str:
        return f"Flower {type(self.flower).__name__}"
