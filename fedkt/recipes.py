"""Named strategies as compositions of registered parts.

A strategy a user names in a config is a recipe: which knowledge clients share, how the
server fuses it, which loss distils the fused target back, and whether model weights
travel too (FedAvg-family, FedDF). ``strategy.knowledge`` / ``fusion`` / ``loss`` in a
config swap a part while keeping the rest, so every method runs under every strategy
shape. Nothing here imports Flower: ``strategies/`` turns a recipe into a Flower strategy.
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
    """A named strategy.

    knowledge/fusion/loss: default parts (``knowledge=None``: no knowledge exchanged).
    weights: the Flower weight-averaging strategy it uses ("fedavg", "fedprox", "fedadam"),
    or None. server_distill: the server distils the fused knowledge into a global student
    (FedDF). server_params: accepted server-side parameters and their defaults.
    """

    description: str
    exchanges: str
    knowledge: str | None = None
    fusion: str | None = None
    loss: str | None = None
    weights: str | None = None
    server_distill: bool = False
    transfer_subset: int | None = None
    fusion_params: dict[str, Any] = field(default_factory=dict)
    loss_params: dict[str, Any] = field(default_factory=dict)
    server_params: dict[str, Any] = field(default_factory=dict)


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def _recipe(name: str, spec: StrategySpec) -> None:
    STRATEGIES.register(name)(lambda: spec)


_SOFT = "soft labels on the transfer set (M x C floats)"
_recipe("local", StrategySpec("local training only, no exchange (the bar every method must clear)", "nothing"))
_recipe("fedavg", StrategySpec("FedAvg (McMahan et al.): sample-weighted average of model weights", "model weights", weights="fedavg"))
_recipe("fedprox", StrategySpec("FedProx (Li et al.): FedAvg + proximal term mu/2 ||w - w_global||^2 on clients", "model weights",
                                weights="fedprox", server_params={"proximal_mu": 0.01}))
_recipe("fedadam", StrategySpec("FedAdam (Reddi et al.): Adam on the server over averaged client updates", "model weights",
                                weights="fedadam", server_params={"eta": 0.03, "eta_l": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}))
_recipe("fkd", StrategySpec("vanilla federated KD: uniform mean of soft labels, distilled with KL", _SOFT, "soft_labels", "mean", "kl"))
_recipe("fedmd", StrategySpec("FedMD (Li & Wang): consensus class scores on a public subset resampled each round, MAE digest + CE revisit",
                              "class scores on a resampled transfer subset (S x C floats)", "logits", "mean", "mae", transfer_subset=5000))
_recipe("fd", StrategySpec("FD (Jeong et al.): per-class mean logits, fused per class excluding the receiver, CE + KL on private data",
                           "per-class mean logits + counts (C x C + C floats), no transfer set", "class_logits", "class_mean", "ce_kl",
                           fusion_params={"exclude_self": True}))
_recipe("dsfl", StrategySpec("DS-FL (Itahara et al.): entropy-reduction aggregation (T_ERA = 0.1) of soft labels, soft CE", _SOFT,
                             "soft_labels", "era", "soft_ce"))
_recipe("fedproto", StrategySpec("FedProto (Tan et al.): class prototypes, per-class global mean, CE + MSE to prototypes",
                                 "per-class mean embeddings + counts (C x D + C floats)", "prototypes", "class_mean", "proto",
                                 fusion_params={"exclude_self": False}))
_recipe("feddf", StrategySpec("FedDF (Lin et al.): FedAvg, then server-side distillation of the clients' mean logits into the global model",
                              "model weights + logits on the transfer set", "logits", "mean", "kl", weights="fedavg", server_distill=True))
_recipe("knfu", StrategySpec("KnFu: personalised fusion of semantic neighbours' soft labels (EPD + KL effectiveness weights)", _SOFT,
                             "soft_labels", "knfu", "kl"))


@dataclass(frozen=True)
class ResolvedStrategy:
    """A strategy with every part named and parameterised; builds the part objects."""

    name: str
    knowledge: str | None
    fusion: str | None
    loss: str | None
    weights: str | None = None
    server_distill: bool = False
    transfer_subset: int | None = None
    views: int = 1
    temperature: float = 1.0
    knowledge_params: dict[str, Any] = field(default_factory=dict)
    fusion_params: dict[str, Any] = field(default_factory=dict)
    loss_params: dict[str, Any] = field(default_factory=dict)
    server_params: dict[str, Any] = field(default_factory=dict)

    @property
    def exchanges_knowledge(self) -> bool:
        return self.knowledge is not None

    @property
    def shares_weights(self) -> bool:
        return self.weights is not None

    def transfer_rows(self, transfer_size: int) -> int:
        """Knowledge rows per client per round for transfer-set knowledge: the transfer
        set (or FedMD's subset), once per view."""
        return (self.transfer_subset or transfer_size) * self.views

    @property
    def domain(self) -> str | None:
        return self.make_knowledge().domain if self.knowledge else None

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
    """Fill in a strategy's default parts and check every name, parameter and pairing."""
    s = cfg.strategy
    spec = STRATEGIES.create(s.name)
    unknown = sorted(set(s.server_params) - set(spec.server_params))
    if unknown:
        raise ConfigError(
            f"strategy.server_params: strategy {s.name!r} has no parameter {unknown[0]!r}"
            f" (accepts: {', '.join(spec.server_params) or 'none'})"
        )
    for key, value in s.server_params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"strategy.server_params.{key}: must be a number >= 0, got {value!r}")
    server_params = {**spec.server_params, **s.server_params}
    archs = set(cfg.architecture_names())
    students = {a for a in cfg.student_names() if a is not None}
    if (spec.weights or spec.server_distill) and students:
        raise ConfigError(
            f"model.student: strategy {s.name!r} averages model weights; teacher/student clients need a "
            "knowledge-based strategy (e.g. knfu, fkd, dsfl)"
        )
    if (spec.weights or spec.server_distill) and len(archs) > 1:
        raise ConfigError(
            f"model.tiers: strategy {s.name!r} averages model weights, so every client needs the same "
            f"architecture (got {', '.join(sorted(archs))})"
        )
    if spec.knowledge is None:
        extra = [k for k in ("knowledge", "fusion", "loss", "transfer_subset") if getattr(s, k) is not None]
        if extra or s.fusion_params or s.loss_params:
            what = extra[0] if extra else ("fusion_params" if s.fusion_params else "loss_params")
            raise ConfigError(f"strategy.{what}: strategy {s.name!r} exchanges no knowledge, so it takes no {what}")
        return ResolvedStrategy(s.name, None, None, None, spec.weights, temperature=s.temperature, server_params=server_params)

    if spec.server_distill:
        changed = [k for k in ("knowledge", "fusion", "transfer_subset") if getattr(s, k) is not None] + (["fusion_params"] if s.fusion_params else [])
        if changed:
            raise ConfigError(f"strategy.{changed[0]}: {s.name!r} distils the mean of all clients' logits on the whole transfer set; it cannot be changed")
    knowledge = s.knowledge or spec.knowledge
    fusion = s.fusion or spec.fusion
    loss = s.loss or spec.loss
    for registry, value, field_name in ((KNOWLEDGE, knowledge, "knowledge"), (FUSIONS, fusion, "fusion"), (LOSSES, loss, "loss")):
        if value not in registry:
            raise ConfigError(f"strategy.{field_name}: unknown {registry.kind} {value!r} (choose one of: {', '.join(registry.names())})")
    # Recipe defaults for a part apply only while that part is the recipe's own.
    fusion_params = {**(spec.fusion_params if fusion == spec.fusion else {}), **s.fusion_params}
    loss_params = {**(spec.loss_params if loss == spec.loss else {}), **s.loss_params}
    subset = s.transfer_subset if s.transfer_subset is not None else spec.transfer_subset
    resolved = ResolvedStrategy(
        s.name, knowledge, fusion, loss, spec.weights, spec.server_distill,
        transfer_subset=None if subset is None else min(subset, cfg.transfer.size),
        views=cfg.transfer.views,
        temperature=s.temperature,
        knowledge_params=_with_temperature(KNOWLEDGE, knowledge, s.temperature, {}),
        fusion_params=fusion_params,
        loss_params=_with_temperature(LOSSES, loss, s.temperature, loss_params),
        server_params=server_params,
    )
    # Instantiate once so bad parameters and pairings fail at config time, not mid-run.
    k, f, lo = resolved.make_knowledge(), resolved.make_fusion(), resolved.make_loss()
    if k.space not in f.spaces or k.domain not in f.domains:
        raise ConfigError(f"strategy.fusion: {fusion!r} cannot fuse {knowledge!r} knowledge ({k.space} per {k.domain} row)")
    if lo.expects != k.space and not (lo.expects == "probs" and k.space == "logits"):
        raise ConfigError(f"strategy.loss: {loss!r} needs {lo.expects} targets but {knowledge!r} knowledge gives {k.space}")
    needed_views = getattr(f, "views", 1)
    if k.domain == "transfer" and needed_views > 1 and needed_views != cfg.transfer.views:
        raise ConfigError(
            f"strategy.fusion: {fusion!r} learns from {needed_views} view(s) of each transfer sample; "
            f"set transfer.views: {needed_views}"
        )
    if lo.needs_labels and k.domain == "transfer" and not cfg.transfer.labelled:
        raise ConfigError(f"strategy.loss: {loss!r} needs labels on the transfer set; set transfer.labelled: true")
    if lo.uses_features and k.space != "embedding":
        raise ConfigError(f"strategy.loss: {loss!r} distils embeddings; use it with prototype knowledge")
    if k.space == "embedding" and len(archs | students) > 1:
        from fedkt.data.sources import DATASETS
        from fedkt.models import build_model

        spec_ds = DATASETS.create(cfg.dataset)
        dims = {a: build_model(a, spec_ds.input_shape, spec_ds.num_classes).embedding_dim for a in sorted(archs | students)}
        if len(set(dims.values())) > 1:
            raise ConfigError(
                f"model: {knowledge!r} knowledge needs one embedding size on every model, got "
                + ", ".join(f"{a}={d}" for a, d in dims.items())
            )
    return resolved


def student_loss(cfg: "ExperimentConfig"):
    """The loss a client's student learns from its teacher with, on private data (labels
    are always available there); checked when a config is validated."""
    m = cfg.model
    if m.student_loss not in LOSSES:
        raise ConfigError(f"model.student_loss: unknown loss {m.student_loss!r} (choose one of: {', '.join(LOSSES.names())})")
    params = _with_temperature(LOSSES, m.student_loss, cfg.strategy.temperature, m.student_loss_params)
    loss = LOSSES.create(m.student_loss, "model.student_loss_params", **params)
    if loss.expects == "embedding":
        raise ConfigError(f"model.student_loss: {m.student_loss!r} distils embeddings; a student learns from its teacher's predictions")
    return loss
