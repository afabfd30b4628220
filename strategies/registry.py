"""Build the Flower strategy for a config: the recipe's parts decide the class."""

from __future__ import annotations

from flwr.serverapp.strategy import Strategy

from fedkt.config import ExperimentConfig
from fedkt.recipes import resolve_strategy
from strategies.knowledge_transfer import KnowledgeTransfer


def build_strategy(cfg: ExperimentConfig, nodes: dict[int, int], num_classes: int, transfer_size: int) -> Strategy:
    """The strategy for ``cfg`` over ``nodes`` (partition id -> node id)."""
    return KnowledgeTransfer(
        resolve_strategy(cfg), nodes, num_classes, transfer_size,
        fraction=cfg.fraction, min_clients=cfg.min_clients, seed=cfg.seed,
    )
