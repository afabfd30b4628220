"""Flower strategies composed from fedkt's registered transfer parts."""

from strategies.knowledge_transfer import KnowledgeTransfer
from strategies.registry import build_strategy

__all__ = ["KnowledgeTransfer", "build_strategy"]
