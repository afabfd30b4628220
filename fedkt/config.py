"""Experiment configuration: a validated, fully-resolved description of one run.

YAML files and ``--set key=value`` overrides are merged into a plain dict, then
validated by pydantic models that forbid unknown keys, so a typo is an error that
names the field rather than a silently ignored setting. The defaults *are* fedkt's
built-in experiment: KnFu on scikit-learn digits, 10 non-IID clients.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedkt.errors import ConfigError
from fedkt.textfiles import read_text

# Upper bounds of every count and size: far beyond what any machine runs (a typo such as
# ``rounds: 99999999999999999999`` is refused in one line instead of starting a run that can
# never end), yet no real experiment comes near them.
MAX_CLIENTS = 10_000_000
MAX_ROUNDS = 1_000_000
MAX_EPOCHS = 100_000
MAX_STEPS = 100_000_000
MAX_BATCH = 10_000_000
MAX_SAMPLES = 1_000_000_000
MAX_SECONDS = 7 * 24 * 3600.0  # a week: any timeout or wait longer than that is a typo
MAX_SEED = 2**63 - 1


class _Section(BaseModel):
    # inf and NaN are never a valid learning rate, weight, timeout or fraction
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PartitionConfig(_Section):
    """How the private training data is split across clients."""

    name: Literal["iid", "dirichlet", "pathological", "quantity_skew"] = "dirichlet"
    alpha: float = Field(
        0.5, gt=0, description="Dirichlet concentration (dirichlet, quantity_skew)"
    )
    classes_per_client: int = Field(
        2, ge=1, le=MAX_SAMPLES, description="classes per client (pathological)"
    )
    samples_per_client: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="average private samples per client (None: use all)"
    )
    min_partition_size: int = Field(10, ge=0, le=MAX_SAMPLES)
    by: str | None = Field(
        None,
        description=(
            "natural partition: each client is one value of this column (writer, user, "
            "speaker); the transfer set comes from the values no client holds"
        ),
    )

    @model_validator(mode="after")
    def _natural(self) -> "PartitionConfig":
        if self.by is not None and self.name != "dirichlet" and "name" in self.model_fields_set:
            raise ValueError(
                f"partition.by partitions by a column; it cannot be combined with "
                f"partition.name: {self.name}"
            )
        return self


class DataConfig(_Section):
    """How a dataset given by name (``hf:``, ``csv:``, ``parquet:``, ``imagefolder:``) is
    read; see :mod:`fedkt.data.named`. Built-in datasets ignore it."""

    label: str = Field("label", description="the label column")
    features: list[str] | None = Field(
        None, description="tabular: the feature columns (default: every numeric column)"
    )
    image: str | None = Field(None, description="the image column (default: the first one)")
    text: str | None = Field(None, description="the text column (default: the first string column)")
    revision: str | None = Field(
        None,
        description=(
            "hf: hub datasets only: the branch, tag or commit to load (pin a commit for "
            "reproducible runs; each revision is converted and cached apart)"
        ),
    )
    train_split: str | None = Field(None, description="default: train")
    test_split: str | None = Field(
        None, description="default: test, else validation, else a held-out share of train"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of train held out as test when there is no test split"
    )
    image_size: tuple[int, int] | None = Field(
        None, description="[H, W] to resize images to (needed when their sizes differ)"
    )
    max_length: int = Field(64, ge=1, le=100_000, description="text: tokens per row")
    vocab_size: int = Field(
        10_000, ge=3, le=10_000_000, description="text: words kept, padding and unknown included"
    )


class TransferConfig(_Section):
    """The shared transfer set D_t, disjoint from every client's private data."""

    size: int = Field(300, ge=1, le=MAX_SAMPLES)
    source: str = Field(
        "train", description="'train' (held out of the train split) or a dataset name"
    )
    labelled: bool = False
    views: int = Field(
        1,
        ge=1,
        le=2,
        description=(
            "2 appends a seeded augmented copy of every transfer sample (second view; needed by "
            "the sade fusion)"
        ),
    )


class EvaluationConfig(_Section):
    """Where clients are scored. ``split: validation`` (what tuning uses) holds a fraction
    of each client's private training data out and scores on it: the test split is then
    never read."""

    client_test_size: int = Field(
        300,
        ge=1,
        le=MAX_SAMPLES,
        description="per-client test samples, drawn with the client's label distribution",
    )
    global_test_size: int | None = Field(
        2000, ge=1, le=MAX_SAMPLES, description="global test samples (None: whole test split)"
    )
    split: Literal["test", "validation"] = Field(
        "test", description="test, or validation: held out of each client's training data (tuning)"
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of each client's training data held out with split: validation",
    )


class ModelTier(_Section):
    name: str
    fraction: float = Field(gt=0, le=1)
    student: str | None = Field(
        None, description="this tier's student architecture (overrides model.student)"
    )


class ModelConfig(_Section):
    """One architecture for all clients (``name``), or ``tiers`` assigning several.

    With a ``student`` each client holds two models: a teacher (``name`` / its tier's
    architecture) trained on private data, and a lightweight student that learns from the
    teacher on private data (``student_loss``) and from the fused knowledge. ``shares``
    says whose knowledge is sent to the server, ``evaluates`` whose accuracy is reported
    as the client's accuracy (both models' accuracies are always recorded).
    """

    name: str = "mlp"
    tiers: list[ModelTier] | None = None
    student: str | None = None
    student_loss: str = Field(
        "kl",
        description="distillation loss (from the loss registry) teacher -> student on private data",
    )
    student_loss_params: dict[str, Any] = Field(default_factory=dict)
    shares: Literal["teacher", "student"] = "teacher"
    evaluates: Literal["teacher", "student"] | None = Field(
        None, description="default: the student when there is one"
    )

    @field_validator("tiers")
    @classmethod
    def _tiers_sum(cls, tiers: list[ModelTier] | None) -> list[ModelTier] | None:
        if tiers is not None:
            if not tiers:
                raise ValueError("tiers must not be empty")
            total = sum(t.fraction for t in tiers)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"tier fractions must sum to 1, got {total:g}")
        return tiers


class TrainConfig(_Section):
    """Local training on private data (cross-entropy)."""

    epochs: int = Field(5, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    amp: bool = Field(
        False,
        description=(
            "mixed precision (float16 on CUDA, bfloat16 on CPU) for training and distillation"
        ),
    )
    drop_last: bool = Field(
        False,
        description=(
            "skip each pass's final batch when it is smaller than batch_size (PyTorch's "
            "DataLoader(drop_last=True), as HtFLlib trains); a client with fewer rows than "
            "one batch still trains on all of them"
        ),
    )


class DistillConfig(_Section):
    """The exchange phase: distilling the fused target (over the transfer set, or private
    data for per-class knowledge), anchored on private data."""

    epochs: int = Field(2, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    lr: float = Field(0.05, gt=0)
    ce_weight: float = Field(
        1.0,
        ge=0,
        description="lambda of the CE anchor on private data added to each distillation step "
        "(0: pure distillation)",
    )
    steps: int | None = Field(
        None,
        ge=0,
        le=MAX_STEPS,
        description="exchange budget: exactly this many optimiser steps per round for every "
        "strategy (distillation, or extra local training where nothing is distilled); "
        "None: distill.epochs passes",
    )


class StrategyConfig(_Section):
    """A strategy name plus optional replacements of its parts."""

    name: str = "knfu"
    knowledge: str | None = None
    fusion: str | None = None
    loss: str | None = None
    temperature: float = Field(1.0, gt=0, description="exchange/distillation temperature T")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "the method's own parameters (fedprox: proximal_mu; fedadam: eta, ...; fedmd: subset)"
        ),
    )
    fusion_params: dict[str, Any] = Field(default_factory=dict)
    loss_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old in ("server_params", "transfer_subset"):
                if old in data:
                    raise ValueError(
                        f"strategy.{old} is now part of strategy.params (e.g. "
                        "strategy.params.subset)"
                    )
        return data


class SimulationConfig(_Section):
    """Where simulated clients run. Placement only: results do not depend on it."""

    num_cpus_per_client: float = Field(1.0, gt=0, le=1024)
    num_cpus: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="cores of the Ray instance fedkt starts on this machine (None: every core "
        "this process may use; `fedkt compare --jobs` sets it per job); unused with ray_address",
    )
    ray_address: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="an existing Ray cluster to run the simulated clients on ('auto', or "
        "HOST:PORT of its head node; see `ray start`); None: start Ray on this machine",
    )
    num_gpus_per_client: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "GPU share per simulated client; None: 0 on CPU, 0.25 (four clients per GPU) when "
            "training on CUDA"
        ),
    )


class FaultConfig(_Section):
    """Injected client faults and attacks (see :mod:`fedkt.faults`); all off by default."""

    crash: float = Field(0.0, ge=0, le=1, description="probability a client call fails")
    straggle: float = Field(0.0, ge=0, le=1, description="probability a client call answers late")
    straggle_seconds: float | None = Field(
        None, ge=0, le=MAX_SECONDS, description="delay of a straggler (None: past round_timeout)"
    )
    leave: float = Field(0.0, ge=0, le=1, description="fraction of clients that leave for good")
    leave_round: int = Field(
        1, ge=1, le=MAX_ROUNDS, description="round from which the leaving clients are gone"
    )
    restart: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability a client's node restarts before a round (loses its state)",
    )
    byzantine: float = Field(
        0.0, ge=0, le=1, description="fraction of clients sending hostile knowledge or weights"
    )
    attack: Literal["random", "flip", "scale"] = Field(
        "random", description="what Byzantine clients send"
    )
    attack_scale: float = Field(
        10.0,
        gt=0,
        le=1e6,
        description=(
            "the 'scale' attack's multiplier (of logits, or of the weight update); in weights, "
            "also the 'random' noise's size relative to the honest update"
        ),
    )


class MonitoringConfig(_Section):
    """Prometheus metrics served by the server while a run is going (``port: null``: off)."""

    port: int | None = Field(
        None, ge=0, le=65535, description="HTTP port for /metrics (0: any free port)"
    )
    host: str = Field(
        "127.0.0.1", description="address to bind; 0.0.0.0 to let a remote Prometheus scrape"
    )
    linger: float = Field(
        0.0,
        ge=0,
        le=MAX_SECONDS,
        description="seconds to keep serving after the last round, so a scrape sees it",
    )


class ExperimentConfig(_Section):
    """A whole experiment. ``fedkt run --help`` lists these fields."""

    name: str = "knfu-digits"
    plugins: list[str] = Field(
        default_factory=list,
        description=(
            "modules to import before the experiment is resolved (each registers its own methods "
            "or parts)"
        ),
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="every random choice derives from it")
    dataset: str = "digits"
    data: DataConfig = Field(default_factory=DataConfig)
    data_dir: str | None = None
    num_clients: int = Field(10, ge=1, le=MAX_CLIENTS)
    rounds: int = Field(10, ge=1, le=MAX_ROUNDS)
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of clients sampled per round")
    min_clients: int = Field(
        1, ge=1, le=MAX_CLIENTS, description="fewest replies for a round to count"
    )
    round_timeout: float = Field(
        600.0, gt=0, le=MAX_SECONDS, description="seconds to wait for replies"
    )
    wait_for_nodes: float = Field(
        120.0,
        ge=0,
        le=MAX_SECONDS,
        description="seconds to wait for num_clients nodes before starting with those present",
    )
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @field_validator("dataset", mode="before")
    @classmethod
    def _prefix_alone(cls, value: Any) -> Any:
        """``--set dataset=csv:`` reads as the YAML mapping {csv: None}: say what is missing."""
        if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
            return f"{next(iter(value))}:"
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from fedkt.data.named import check_name
        from fedkt.data.sources import DATASETS

        if name in DATASETS:
            return name
        if ":" in name:
            return check_name(name)
        raise ValueError(
            f"unknown dataset {name!r} (choose one of: {', '.join(DATASETS.names())}, or "
            "hf:NAME, csv:PATH, parquet:PATH, imagefolder:DIR)"
        )

    @model_validator(mode="after")
    def _cross_checks(self) -> "ExperimentConfig":
        """Checks between fields of the schema itself; names of strategies, parts and
        models are checked when the experiment is resolved (:func:`fedkt.experiment.resolve`)."""
        if self.min_clients > self.num_clients:
            raise ValueError(
                f"min_clients ({self.min_clients}) exceeds num_clients ({self.num_clients})"
            )
        return self

    def clients_per_round(self, available: int | None = None) -> int:
        """How many clients a round samples when ``available`` are there (default: all
        ``num_clients``): ``fraction`` of them, at least ``min_clients``."""
        n = self.num_clients if available is None else available
        return min(n, max(self.min_clients, math.ceil(self.fraction * n)))

    def _tiers_of_clients(self) -> list[ModelTier]:
        """The tier of each client, in client order (tiers in contiguous blocks)."""
        tiers = self.model.tiers or [ModelTier(name=self.model.name, fraction=1.0)]
        out: list[ModelTier] = []
        for i, tier in enumerate(tiers):
            count = (
                self.num_clients - len(out)
                if i == len(tiers) - 1
                else round(tier.fraction * self.num_clients)
            )
            out.extend([tier] * max(0, min(count, self.num_clients - len(out))))
        return out

    def architecture_names(self) -> list[str]:
        """Architecture of each client's (teacher) model, in client order."""
        return [t.name for t in self._tiers_of_clients()]

    def student_names(self) -> list[str | None]:
        """Student architecture of each client (None: the client has a single model)."""
        return [t.student or self.model.student for t in self._tiers_of_clients()]

    @property
    def evaluated_model(self) -> str:
        """Which model's accuracy is a client's accuracy ("teacher" or "student")."""
        if self.model.evaluates is not None:
            return self.model.evaluates
        return "student" if any(a is not None for a in self.student_names()) else "teacher"

    def to_json(self) -> str:
        return self.model_dump_json()

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.to_json()), sort_keys=False)


# ----------------------------------------------------------------------------- loading

_SHORTHAND = {"strategy": "name", "model": "name", "partition": "name"}


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """Expand shorthands (``strategy: knfu`` -> ``strategy: {name: knfu}``)."""
    for key, inner in _SHORTHAND.items():
        if isinstance(raw.get(key), str):
            raw[key] = {inner: raw[key]}
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML so numbers/bools/null work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set rounds=5")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = _normalise(copy.deepcopy(raw))
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and part in _SHORTHAND and i == 0:
                child = node[part] = {_SHORTHAND[part]: child}
            elif not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"--set {text!r}: {where} is {child!r}, not a section")
            node = child
        node[path[-1]] = value
        raw = _normalise(raw)
    return raw


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling; `fedkt run --help` lists the fields)"
    elif "input" in err and err["type"] != "missing":
        msg += " (got a section)" if isinstance(err["input"], dict) else f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = read_text(path, ConfigError, "YAML text file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of fields, got {type(raw).__name__}"
        )
    return raw


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate ``raw`` (+ overrides) into an :class:`ExperimentConfig` or raise ConfigError."""
    merged = apply_overrides(raw, list(overrides or []))
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load a YAML experiment (or the built-in default when ``path`` is None)."""
    raw = read_yaml(path) if path else {}
    return build_config(raw, overrides)


def config_from_json(text: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate_json(text)
