"""The strategy for an experiment: what its method exchanges decides the shape.

- weights only (FedAvg, FedProx, FedAdam): the Flower strategy the method names;
- knowledge (with or without weights): :class:`KnowledgeTransfer`;
- nothing: :class:`LocalOnly`.
"""

from __future__ import annotations

from flwr.app import ArrayRecord

from fedkt.experiment import Experiment
from fedkt.learner import initial_model
from fedkt.strategies.base import LocalOnly, RoundStrategy
from fedkt.strategies.knowledge_transfer import KnowledgeTransfer
from fedkt.strategies.weight_averaging import WeightAveraging


def initial_arrays(exp: Experiment) -> ArrayRecord:
    """The global model weight-sharing strategies start from: the same initial weights
    every client of that architecture starts from under any strategy."""
    return ArrayRecord(initial_model(exp).state_dict())


def build_strategy(exp: Experiment, nodes: dict[int, int]) -> tuple[RoundStrategy, ArrayRecord]:
    """The strategy for ``exp`` over ``nodes`` (partition id -> node id), and the initial
    global arrays (empty for strategies without a global model)."""
    method = exp.method
    arrays = initial_arrays(exp) if method.shares_weights else ArrayRecord()
    if method.exchanges_knowledge:
        return KnowledgeTransfer(exp, nodes), arrays
    if method.shares_weights:
        return WeightAveraging(exp), arrays
    return LocalOnly(), arrays
