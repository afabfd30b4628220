"""Resolve a config once into the experiment it describes.

:class:`fedkt.config.ExperimentConfig` is a pure schema: it checks field types and
ranges. :func:`resolve` turns it into an :class:`Experiment` — the method, its part
objects, the student loss, the dataset's shape and every client's architecture — checking
every name, parameter and pairing on the way (one-line :class:`ConfigError`). It runs
once per process and the result is passed down: to the server loop, the strategy, each
client's :class:`fedkt.learner.Learner`, the results writer.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkt.config import ExperimentConfig, config_from_json
from fedkt.errors import ConfigError, DataError
from fedkt.faults import byzantine_clients
from fedkt.method import METHODS, Method
from fedkt.models import (
    MODELS,
    TIMM_PREFIX,
    check_timm,
    embedding_dim,
    is_model,
    model_modalities,
)
from fedkt.registry import Registry
from fedkt.transfer import FUSIONS, KNOWLEDGE, LOSSES
from fedkt.transfer.fusion import Fusion
from fedkt.transfer.knowledge import Knowledge
from fedkt.transfer.losses import DistillationLoss

if TYPE_CHECKING:
    from fedkt.data.federation import Federation

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True, eq=False)
class Experiment:
    """Everything a run needs that follows from its config, built once."""

    config: ExperimentConfig
    name: str  #: the method's registered name (``strategy.name``)
    method: Method
    params: dict[str, Any]  #: the method's parameters (defaults + ``strategy.params``)
    knowledge: Knowledge | None
    fusion: Fusion | None
    loss: DistillationLoss | None
    student_loss: DistillationLoss | None
    parts: dict[str, str | None]  #: knowledge / fusion / loss names, for reports
    num_classes: int
    input_shape: tuple[int, ...]
    architectures: tuple[str, ...]  #: each client's (teacher) architecture
    students: tuple[str | None, ...]  #: each client's student architecture, or None
    evaluates: str = "teacher"  #: whose accuracy is a client's ("teacher" or "student")
    attackers: frozenset[int] = field(default_factory=frozenset)
    _federations: dict[str | None, Federation] = field(default_factory=dict, repr=False)

    @property
    def exchanges_knowledge(self) -> bool:
        return self.knowledge is not None

    @property
    def temperature(self) -> float:
        return self.config.strategy.temperature

    @property
    def shared_architecture(self) -> str:
        """The architecture whose weights the server averages (a weight-sharing method):
        every client's model, or every client's student (``Method.weights_of``)."""
        arch = self.students[0] if self.method.weights_of == "student" else self.architectures[0]
        assert arch is not None
        return arch

    def transfer_indices(self, server_round: int) -> np.ndarray | None:
        """Transfer rows of ``server_round`` (the method's choice; None: every row)."""
        return self.method.transfer_indices(self, server_round)

    def knowledge_rows(self, server_round: int) -> int:
        """Rows of knowledge each client sends in ``server_round``."""
        if self.knowledge is not None and self.knowledge.domain == "class":
            return self.num_classes
        idx = self.transfer_indices(server_round)
        return self.config.transfer.size * self.config.transfer.views if idx is None else len(idx)

    def federation(self, data_folder: str | None = None) -> Federation:
        """The data layout (process-wide cache: :func:`fedkt.data.federation.federation_for`)."""
        from fedkt.data.federation import federation_for

        if data_folder not in self._federations:
            self._federations[data_folder] = federation_for(self.config, data_folder)
        return self._federations[data_folder]


def _load_plugins(cfg: ExperimentConfig) -> None:
    """Import the modules a config names in ``plugins``: each registers its own methods or
    parts. Only importable module names are accepted (no paths, no code)."""
    for name in cfg.plugins:
        if not _MODULE_NAME.match(name):
            raise ConfigError(f"plugins: {name!r} is not a module name (e.g. mypackage.my_method)")
        try:
            importlib.import_module(name)  # layering: a user's module, named in the config
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {name!r} ({exc})") from None


def _with_temperature(
    registry: Registry[Any], name: str, temperature: float, params: dict[str, Any]
) -> dict[str, Any]:
    if "temperature" in registry.parameters(name):
        return {"temperature": temperature, **params}
    return dict(params)


def _params(name: str, method: Method, given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(method.params))
    if unknown:
        raise ConfigError(
            f"strategy.params: strategy {name!r} has no parameter {unknown[0]!r}"
            f" (accepts: {', '.join(method.params) or 'none'})"
        )
    checked = {}
    for key, value in given.items():
        try:
            checked[key] = method.check_param(key, value)  # the method's reading of it
        except ValueError as exc:
            raise ConfigError(f"strategy.params.{key}: {exc}") from None
    return {**method.params, **checked}


def _check_models(
    cfg: ExperimentConfig, archs: tuple[str, ...], students: tuple[str | None, ...]
) -> None:
    for arch in archs:
        if not is_model(arch):
            raise ConfigError(
                f"model: unknown model {arch!r} (choose one of: {', '.join(MODELS.names())}, "
                "or timm:ARCH)"
            )
    for student in students:
        if student is not None and not is_model(student):
            raise ConfigError(
                f"model.student: unknown model {student!r} (choose one of: "
                f"{', '.join(MODELS.names())}, or timm:ARCH)"
            )
    for name in sorted({a for a in (*archs, *students) if a and a.startswith(TIMM_PREFIX)}):
        problem = check_timm(name)
        if problem:
            raise ConfigError(f"model: {problem}")
    has_student = any(a is not None for a in students)
    for field_name in ("shares", "evaluates"):
        if getattr(cfg.model, field_name) == "student" and not has_student:
            raise ConfigError(
                f"model.{field_name}: 'student' needs a student model (set model.student)"
            )


def _student_loss(cfg: ExperimentConfig) -> DistillationLoss:
    """The loss a client's student learns from its teacher with, on private data (labels
    are always available there)."""
    m = cfg.model
    if m.student_loss not in LOSSES:
        raise ConfigError(
            f"model.student_loss: unknown loss {m.student_loss!r} (choose one of: "
            f"{', '.join(LOSSES.names())})"
        )
    params = _with_temperature(
        LOSSES, m.student_loss, cfg.strategy.temperature, m.student_loss_params
    )
    loss = LOSSES.create(m.student_loss, "model.student_loss_params", **params)
    if loss.expects == "embedding":
        raise ConfigError(
            f"model.student_loss: {m.student_loss!r} distils embeddings; a student learns from "
            "its teacher's predictions"
        )
    return loss


def resolve(cfg: ExperimentConfig) -> Experiment:
    """Build the experiment ``cfg`` describes; a one-line ConfigError on any bad name,
    parameter or pairing."""
    import fedkt.methods  # noqa: F401 - registers the built-in methods
    from fedkt.data.sources import describe

    _load_plugins(cfg)
    s = cfg.strategy
    method = METHODS.create(s.name)
    archs, students = tuple(cfg.architecture_names()), tuple(cfg.student_names())
    companion = method.shares_weights and method.weights_of == "student"
    if companion and all(a is None for a in students):
        students = (archs[0],) * len(archs)  # the shared companion defaults to client 0's model
    _check_models(cfg, archs, students)
    try:
        spec = describe(cfg)
    except DataError as exc:
        raise ConfigError(f"dataset: {exc}") from None
    for arch in sorted(set(archs) | {a for a in students if a is not None}):
        if spec.modality not in model_modalities(arch):
            raise ConfigError(
                f"model: {arch!r} reads {' or '.join(model_modalities(arch))} data; "
                f"{cfg.dataset} is {spec.modality} (models for it: "
                f"{', '.join(n for n in MODELS.names() if spec.modality in model_modalities(n))})"
            )
    params = _params(s.name, method, s.params)
    has_student = any(a is not None for a in students)
    if companion and (None in students or len(set(students)) > 1):
        raise ConfigError(
            f"model.student: strategy {s.name!r} averages the students' weights, so every "
            f"client needs one student architecture (got "
            f"{', '.join(sorted(str(a) for a in set(students)))})"
        )
    if method.shares_weights and has_student and not companion:
        raise ConfigError(
            f"model.student: strategy {s.name!r} averages model weights; teacher/student clients "
            "need a "
            "knowledge-based strategy (e.g. knfu, fkd, dsfl)"
        )
    if method.shares_weights and not companion and len(set(archs)) > 1:
        raise ConfigError(
            f"model.tiers: strategy {s.name!r} averages model weights, so every client needs the "
            "same "
            f"architecture (got {', '.join(sorted(set(archs)))})"
        )
    common = dict(
        config=cfg,
        name=s.name,
        method=method,
        params=params,
        student_loss=_student_loss(cfg) if has_student else None,
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        architectures=archs,
        students=students,
        evaluates=cfg.model.evaluates or ("teacher" if companion else cfg.evaluated_model),
        attackers=byzantine_clients(cfg),
    )
    if not method.exchanges_knowledge:
        extra = [k for k in ("knowledge", "fusion", "loss") if getattr(s, k) is not None]
        if extra or s.fusion_params or s.loss_params:
            what = extra[0] if extra else ("fusion_params" if s.fusion_params else "loss_params")
            raise ConfigError(
                f"strategy.{what}: strategy {s.name!r} exchanges no knowledge, so it takes no "
                f"{what}"
            )
        if cfg.faults.byzantine > 0 and not method.shares_weights:
            raise ConfigError(
                f"faults.byzantine: strategy {s.name!r} sends neither knowledge nor weights for "
                "attackers to corrupt"
            )
        plain = Experiment(
            knowledge=None,
            fusion=None,
            loss=None,
            parts={"knowledge": None, "fusion": None, "loss": None},
            **common,  # type: ignore[arg-type]
        )
        method.validate(plain)
        return plain
    if method.fixed_parts:
        changed = [k for k in ("knowledge", "fusion") if getattr(s, k) is not None]
        if changed:  # the parts' parameters (fusion_params) may still be set
            raise ConfigError(
                f"strategy.{changed[0]}: the server step of {s.name!r} needs its own parts "
                f"({method.knowledge} knowledge, {method.fusion} fusion); they cannot be changed"
            )
    if method.adopts_targets and (s.loss is not None or s.loss_params):
        raise ConfigError(
            f"strategy.{'loss' if s.loss is not None else 'loss_params'}: {s.name!r} clients "
            "adopt what the server sends as it is and distil nothing, so it takes no loss"
        )
    knowledge, fusion, loss = (
        s.knowledge or method.knowledge,
        s.fusion or method.fusion,
        None if method.adopts_targets else s.loss or method.loss,
    )
    assert knowledge is not None and fusion is not None
    assert loss is not None or method.adopts_targets
    for registry, value, field_name in (
        (KNOWLEDGE, knowledge, "knowledge"),
        (FUSIONS, fusion, "fusion"),
        (LOSSES, loss, "loss"),
    ):
        if value is not None and value not in registry:
            raise ConfigError(
                f"strategy.{field_name}: unknown {registry.kind} {value!r} (choose one of: "
                f"{', '.join(registry.names())})"
            )
    # A method's defaults for a part apply only while that part is the method's own.
    fusion_params = {**(method.fusion_params if fusion == method.fusion else {}), **s.fusion_params}
    loss_params = {**(method.loss_params if loss == method.loss else {}), **s.loss_params}
    k = KNOWLEDGE.create(
        knowledge,
        "strategy.knowledge",
        **_with_temperature(KNOWLEDGE, knowledge, s.temperature, {}),
    )
    if "seed" in FUSIONS.parameters(fusion) and "seed" not in fusion_params:
        fusion_params["seed"] = cfg.seed  # a fusion with randomness of its own (FedTGP)
    f = FUSIONS.create(fusion, "strategy.fusion_params", **fusion_params)
    if k.space not in f.spaces or k.domain not in f.domains:
        raise ConfigError(
            f"strategy.fusion: {fusion!r} cannot fuse {knowledge!r} knowledge ({k.space} per "
            f"{k.domain} row)"
        )
    needed_views = f.views
    if k.domain == "transfer" and needed_views > 1 and needed_views != cfg.transfer.views:
        raise ConfigError(
            f"strategy.fusion: {fusion!r} learns from {needed_views} view(s) of each transfer "
            "sample; "
            f"set transfer.views: {needed_views}"
        )
    if loss is not None and f.targets_space is not None:
        raise ConfigError(
            f"strategy.fusion: {fusion!r} returns a {f.targets_space}, which clients adopt "
            "instead of distilling; no loss learns from it (use the method it belongs to)"
        )
    lo: DistillationLoss | None = None
    if loss is not None:  # None: the method adopts its targets (no distillation)
        lo = LOSSES.create(
            loss,
            "strategy.loss_params",
            **_with_temperature(LOSSES, loss, s.temperature, loss_params),
        )
        _check_loss(cfg, knowledge, k, loss, lo)
    models = sorted(set(archs) | {a for a in students if a is not None})
    if k.space in ("embedding", "head") and len(models) > 1:
        dims = {a: embedding_dim(a, spec.input_shape, spec.num_classes) for a in models}
        if len(set(dims.values())) > 1:
            raise ConfigError(
                f"model: {knowledge!r} knowledge needs one embedding size on every model, got "
                + ", ".join(f"{a}={d}" for a, d in dims.items())
            )
    exp = Experiment(
        knowledge=k,
        fusion=f,
        loss=lo,
        parts={"knowledge": knowledge, "fusion": fusion, "loss": loss},
        **common,  # type: ignore[arg-type]
    )
    method.validate(exp)
    return exp


def _check_loss(
    cfg: ExperimentConfig,
    knowledge: str,
    k: Knowledge,
    loss: str,
    lo: DistillationLoss,
) -> None:
    """The distillation loss fits the knowledge and the transfer set."""
    if lo.expects != k.space and not (lo.expects == "probs" and k.space == "logits"):
        raise ConfigError(
            f"strategy.loss: {loss!r} needs {lo.expects} targets but {knowledge!r} knowledge "
            f"gives {k.space}"
        )
    if lo.needs_labels and k.domain == "transfer" and not cfg.transfer.labelled:
        raise ConfigError(
            f"strategy.loss: {loss!r} needs labels on the transfer set; set transfer.labelled: true"
        )
    if lo.uses_features and k.space != "embedding":
        raise ConfigError(
            f"strategy.loss: {loss!r} distils embeddings; use it with prototype knowledge"
        )


def strategy_names() -> list[str]:
    """Every registered method (built-in ones and those of imported plugins)."""
    import fedkt.methods  # noqa: F401 - registers the built-in methods

    return METHODS.names()


@functools.lru_cache(maxsize=4)
def experiment_from_json(text: str) -> Experiment:
    """The experiment of a config sent as JSON (the server's handshake), resolved once
    per process: every later message of the run reuses it."""
    return resolve(config_from_json(text))


def load_experiment(path: str | None = None, overrides: list[str] | None = None) -> Experiment:
    """:func:`fedkt.config.load_config` + :func:`resolve`."""
    from fedkt.config import load_config

    return resolve(load_config(path, overrides))
