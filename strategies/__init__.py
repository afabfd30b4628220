"""Flower strategies composed from fedkt's methods (installed as ``fedkt.strategies``)."""

from fedkt.strategies.base import LocalOnly, RoundStrategy
from fedkt.strategies.build import build_strategy
from fedkt.strategies.knowledge_transfer import KnowledgeTransfer
from fedkt.strategies.weight_averaging import WeightAveraging

__all__ = ["KnowledgeTransfer", "LocalOnly", "RoundStrategy", "WeightAveraging", "build_strategy"]
