"""Flower strategies composed from fedkt's registered transfer parts."""

from strategies.ensemble_distillation import EnsembleDistillation
from strategies.knowledge_transfer import KnowledgeTransfer
from strategies.registry import LocalOnly, build_strategy

__all__ = ["EnsembleDistillation", "KnowledgeTransfer", "LocalOnly", "build_strategy"]
