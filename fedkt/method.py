"""What a transfer method is: a declaration of its parts plus its round-protocol hooks.

A method names the three registered parts it composes (knowledge a client shares, the
server's fusion, the loss that distils the fused target back), the parameters it
accepts (``strategy.params`` in a config), whether model weights travel, and overrides
the hooks where its paper's round differs from the shared protocol. Each method lives in
one file under :mod:`fedkt.methods`; nothing outside that file branches on its name.

The shared round protocol (``docs/ARCHITECTURE.md``): local training -> knowledge
extraction -> validation + fusion on the server -> (server step) -> distillation of the
personalised target, with an optional private-data anchor -> scoring.

No Flower here: the Flower strategies in ``strategies/`` read a method's declaration and
call its hooks, so a method can be unit-tested on tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from fedkt.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fedkt.experiment import Experiment
    from fedkt.learner import Learner
    from fedkt.training import Fit


class WeightCodec(Protocol):
    """How weights travel, both ways (FedKD: truncated-SVD factors); arrays by name.

    ``base``: weights both ends hold this round, the global model as the client decoded it
    (the server decodes what it sent to get the same). A client passes it to ``encode``
    and the codec may send the change from it; the server passes it to ``decode``, which
    must tell from the record whether it holds weights or changes. The server's own model
    is encoded without a base: a sampled client may hold no earlier copy. ``updates``:
    whether clients send changes, so that the server keeps the base only then."""

    updates: bool

    def encode(
        self, state: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]: ...

    def decode(
        self, record: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]: ...


#: What soft-label methods exchange (used in several method declarations).
SOFT_LABELS = "soft labels on the transfer set (M x C floats)"


@dataclass(frozen=True, kw_only=True)
class Method:
    """A federated transfer method.

    Parameters
    ----------
    description, exchanges :
        One line each for ``fedkt strategies`` and the docs.
    knowledge, fusion, loss :
        Registered part names (``None`` for all three: no knowledge is exchanged).
    fusion_params, loss_params :
        The method's own defaults for its parts; they apply only while the config keeps
        that part (a swapped-in part starts from its own defaults).
    params :
        Parameters the method itself accepts (``strategy.params``) and their defaults.
    shares_weights :
        Clients send their model weights and adopt the server's model.
    averaging :
        The Flower strategy (a class of ``flwr.serverapp.strategy``, by name) that
        aggregates the weights of a weights-only method; ``params`` are its keyword
        arguments.
    fixed_parts :
        The method's knowledge and fusion cannot be swapped from the config (its server
        step or its clients depend on them); their parameters can be set.
    weights_of :
        Whose weights travel when the method shares weights: each client's own model
        (FedAvg), or its student (FML's meme, FedKD's mentee): a companion model of one
        architecture on every client, averaged on the server, while each client's own
        model, of any architecture, stays private and is the one scored. Without
        ``model.student`` in the config, every client's student is the first client's
        architecture.
    adopts_targets :
        Clients take the fused target into their model as it is (:meth:`receive`: FedGH's
        global head) instead of distilling it; such a method names no loss.
    """

    description: str
    exchanges: str
    knowledge: str | None = None
    fusion: str | None = None
    loss: str | None = None
    fusion_params: Mapping[str, Any] = field(default_factory=dict)
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    shares_weights: bool = False
    averaging: str | None = None
    fixed_parts: bool = False
    weights_of: Literal["model", "student"] = "model"
    adopts_targets: bool = False

    @property
    def exchanges_knowledge(self) -> bool:
        return self.knowledge is not None

    @property
    def distils_on_clients(self) -> bool:
        """Clients distil a fused target each round (their exchange phase). Otherwise,
        under an exchange budget, they spend it on local training instead."""
        return self.exchanges_knowledge and not self.adopts_targets

    # ------------------------------------------------------------------ hooks
    def check_param(self, name: str, value: Any) -> Any:
        """Validate one of :attr:`params` (raise ValueError naming it) and return the
        value the method uses. Default: a number >= 0, which fits every server-side rate,
        weight and coefficient."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return value

    def validate(self, exp: Experiment) -> None:
        """Checks of the resolved experiment this method needs (raise ConfigError)."""

    def averaging_params(self, exp: Experiment) -> dict[str, Any]:
        """Keyword arguments of the Flower strategy named by :attr:`averaging`: the
        resolved ``strategy.params``, where a method may derive a default (None) from the
        experiment."""
        return dict(exp.params)

    def transfer_indices(self, exp: Experiment, server_round: int) -> np.ndarray | None:
        """Transfer-set rows used in ``server_round`` by every client and the server
        (with two views: the chosen samples' rows in both). ``None``: every row."""
        return None

    def anchor_weight(self, exp: Experiment) -> float:
        """lambda of the private-data cross-entropy added to each distillation step: the
        anchor that keeps a client on its own task while it absorbs knowledge. [ours]
        Default ``distill.ce_weight`` (1.0): without it, pure-KL fine-tuning on a fused
        target that is wrong for a client's classes can wipe out its local model.
        [paper] Per-class knowledge (FD, FedProto) is distilled on private data by a loss
        that already holds that cross-entropy (``needs_labels``): no second anchor."""
        if (
            exp.knowledge is not None
            and exp.knowledge.domain == "class"
            and exp.loss is not None
            and exp.loss.needs_labels
        ):
            return 0.0
        return exp.config.distill.ce_weight

    def distill_steps(self, exp: Experiment) -> int | None:
        """Optimiser steps of the distillation (None: ``distill.epochs`` passes). Default:
        the exchange budget ``distill.steps`` when one is set."""
        return exp.config.distill.steps

    def prepare(self, exp: Experiment, learner: Learner, server_round: int) -> dict[str, float]:
        """Runs on a client before its local training each round; returns metrics."""
        return {}

    def local_training(
        self, exp: Experiment, learner: Learner, generator: torch.Generator, steps: int | None
    ) -> Fit | None:
        """A client's training on its private data, where the method's differs from
        cross-entropy on its own model (FML's mutual learning of the model and the
        student): ``train.epochs`` passes, or exactly ``steps`` optimiser steps. ``None``
        (the default): plain local training, then the teacher's lesson to a student."""
        return None

    def client_modules(self, exp: Experiment, learner: Learner) -> dict[str, nn.Module]:
        """Modules of the method's own that each client keeps across rounds, beside its
        models (FedKD's hidden-state map), built with their initial weights; saved with the
        client's state under ``extra.<name>.`` and never sent."""
        return {}

    def weight_codec(self, exp: Experiment, server_round: int) -> WeightCodec | None:
        """How a weight-averaging method's weights travel in ``server_round``, both ways:
        the clients encode what they send and decode what they receive, the server decodes
        before averaging and encodes the average. ``None`` (the default): as they are."""
        return None

    def receive(
        self, exp: Experiment, learner: Learner, target: np.ndarray, server_round: int
    ) -> dict[str, float]:
        """How a client of an :attr:`adopts_targets` method takes its target into its
        model (raise ValueError naming what does not fit); returns metrics (not
        ``exchange_steps``: the reply's would replace the train phase's count of the local
        steps the exchange budget bought)."""
        raise NotImplementedError(f"{type(self).__name__} adopts no targets")

    def after_distillation(
        self, exp: Experiment, learner: Learner, server_round: int
    ) -> dict[str, float]:
        """Runs on a client after it distilled its target, before it is scored; returns
        metrics (``exchange_steps`` adds to the distillation's)."""
        return {}

    def server_step(
        self, exp: Experiment, model: nn.Module | None, targets: np.ndarray, server_round: int
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        """Runs on the server after fusion. ``model`` holds the averaged weights when
        the method shares weights (else ``None``); ``targets`` are the fused targets,
        one per participant. Returns the targets clients distil (``None``: no targets;
        clients adopt the server's model instead) and the step's metrics (the round's
        ``server`` entry in rounds.jsonl)."""
        return targets, {}


METHODS: Registry[Method] = Registry("strategy")


def register(name: str, method: Method) -> Method:
    """Register ``method`` under ``name`` (the ``strategy`` a config names)."""
    METHODS.register(name)(lambda: method)
    return method
