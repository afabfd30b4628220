"""Named strategies as compositions of registered parts.

A strategy a user names in a config (``knfu``, ``fkd``, ``local``) is a recipe: which
knowledge clients share, how the server fuses it, and which loss distils the fused
target back. ``strategy.fusion`` / ``strategy.loss`` in a config swap a part while
keeping the rest, so every method runs under every strategy shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedkt.errors import ConfigError
from fedkt.registry import Registry
from fedkt.transfer import FUSIONS, KNOWLEDGE, LOSSES

if TYPE_CHECKING:
    from fedkt.config import ExperimentConfig


@dataclass(frozen=True)
class StrategySpec:
    """Default parts of a named strategy; ``knowledge=None`` means nothing is exchanged."""

    description: str
    knowledge: str | None = None
    fusion: str | None = None
    loss: str | None = None


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def _recipe(name: str, spec: StrategySpec) -> None:
    STRATEGIES.register(name)(lambda: spec)


_recipe("local", StrategySpec("local training only, no exchange (the lower bar every method must clear)"))
_recipe("fkd", StrategySpec("vanilla federated KD: uniform mean of soft labels on the transfer set", "soft_labels", "mean", "kl"))
_recipe("knfu", StrategySpec("KnFu: personalised fusion of semantic neighbours' soft labels (EPD + KL weights)", "soft_labels", "knfu", "kl"))


@dataclass(frozen=True)
class ResolvedStrategy:
    """A strategy with every part named and parameterised; builds the part objects."""

    name: str
    knowledge: str | None
    fusion: str | None
    loss: str | None
    knowledge_params: dict[str, Any] = field(default_factory=dict)
    fusion_params: dict[str, Any] = field(default_factory=dict)
    loss_params: dict[str, Any] = field(default_factory=dict)

    @property
    def exchanges_knowledge(self) -> bool:
        return self.knowledge is not None

    def make_knowledge(self):
        return KNOWLEDGE.create(self.knowledge, "strategy.knowledge", **self.knowledge_params)

    def make_fusion(self):
        return FUSIONS.create(self.fusion, "strategy.fusion_params", **self.fusion_params)

    def make_loss(self):
        return LOSSES.create(self.loss, "strategy.loss_params", **self.loss_params)


def _with_temperature(registry: Registry, name: str, temperature: float, params: dict[str, Any]) -> dict[str, Any]:
    if "temperature" in registry.parameters(name):
        return {"temperature": temperature, **params}
    return dict(params)


def resolve_strategy(cfg: "ExperimentConfig") -> ResolvedStrategy:
    """Fill in a strategy's default parts and check every name and parameter."""
    s = cfg.strategy
    spec = STRATEGIES.create(s.name)
    if spec.knowledge is None:
        extra = [k for k in ("knowledge", "fusion", "loss") if getattr(s, k) is not None]
        if extra or s.fusion_params or s.loss_params:
            what = extra[0] if extra else ("fusion_params" if s.fusion_params else "loss_params")
            raise ConfigError(f"strategy.{what}: strategy {s.name!r} exchanges no knowledge, so it takes no {what}")
        return ResolvedStrategy(s.name, None, None, None)
    knowledge = s.knowledge or spec.knowledge
    fusion = s.fusion or spec.fusion
    loss = s.loss or spec.loss
    for registry, value, field_name in ((KNOWLEDGE, knowledge, "knowledge"), (FUSIONS, fusion, "fusion"), (LOSSES, loss, "loss")):
        if value not in registry:
            raise ConfigError(f"strategy.{field_name}: unknown {registry.kind} {value!r} (choose one of: {', '.join(registry.names())})")
    resolved = ResolvedStrategy(
        s.name, knowledge, fusion, loss,
        knowledge_params=_with_temperature(KNOWLEDGE, knowledge, s.temperature, {}),
        fusion_params=dict(s.fusion_params),
        loss_params=_with_temperature(LOSSES, loss, s.temperature, s.loss_params),
    )
    # Instantiate once so bad parameters fail at config time, not mid-run.
    resolved.make_knowledge()
    resolved.make_fusion()
    loss_obj = resolved.make_loss()
    if getattr(loss_obj, "needs_labels", False) and not cfg.transfer.labelled:
        raise ConfigError(f"strategy.loss: {loss!r} needs labels on the transfer set; set transfer.labelled: true")
    return resolved
