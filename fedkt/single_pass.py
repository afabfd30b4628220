"""What the single-pass forms of per-class methods share (``fedproto_local``, ``fd_local``):
each client keeps the fused per-class targets it was last sent, with its state, and its
next local training adds a term towards them, in the same pass as its cross-entropy.

This is how FedProto's and FD's papers (and HtFLlib) train: no exchange phase, so the
optimiser steps and passes over private data are those of local training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedkt.errors import ConfigError
from fedkt.method import Method
from fedkt.training import Fit, train_supervised

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner

#: (inputs, labels) -> the loss of one batch, built on the batch's forward pass.
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ReceivedTargets(nn.Module):
    """The fused targets a client was last sent, one row per class (NaN: none for that
    class), kept across rounds with its state (``filled`` once a first set arrived)."""

    value: torch.Tensor
    filled: torch.Tensor

    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        self.register_buffer("value", torch.full((classes, width), float("nan")))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))


class SinglePassMethod(Method):
    """A per-class method whose clients take their target into their next local training.

    Subclasses say what a row of the target is (:meth:`target_width`), under which name a
    client keeps it (:attr:`memory`) and the loss of one batch (:meth:`objective`); until a
    first target arrives (the papers' round 1) a client trains on cross-entropy alone.
    Under an exchange budget (``budget: equal``) the budget goes to more of the same local
    training, as for every method that distils nothing on the client.
    """

    memory = "targets"

    def target_width(self, exp: Experiment, learner: Learner) -> int:
        raise NotImplementedError

    def objective(self, exp: Experiment, learner: Learner, targets: torch.Tensor) -> Objective:
        """The loss of one batch, given every class's target row (NaN rows: none)."""
        raise NotImplementedError

    def validate(self, exp: Experiment) -> None:
        if any(s is not None for s in exp.students):
            raise ConfigError(
                f"model.student: {exp.config.strategy.name} regularises each client's own "
                "model; no students"
            )

    def client_modules(self, exp: Experiment, learner: Learner) -> dict[str, nn.Module]:
        return {self.memory: ReceivedTargets(exp.num_classes, self.target_width(exp, learner))}

    def _targets(self, learner: Learner) -> ReceivedTargets:
        module = learner.extras[self.memory]
        assert isinstance(module, ReceivedTargets)
        return module

    def receive(
        self, exp: Experiment, learner: Learner, target: np.ndarray, server_round: int
    ) -> dict[str, float]:
        kept = self._targets(learner)
        if target.shape != tuple(kept.value.shape):
            raise ValueError(
                f"{self.memory} of shape {target.shape}, this client's model needs "
                f"{tuple(kept.value.shape)}"
            )
        kept.value.copy_(torch.as_tensor(target, dtype=torch.float32))
        kept.filled.fill_(True)
        return {}  # nothing distilled now: the target shapes the next local training

    def local_training(
        self, exp: Experiment, learner: Learner, generator: torch.Generator, steps: int | None
    ) -> Fit | None:
        kept, model = self._targets(learner), learner.model
        if not bool(kept.filled):
            return None  # nothing received yet: plain local training
        targets = kept.value.to(next(model.parameters()).device)
        data = learner.data
        return train_supervised(
            model, data.train_x, data.train_y, exp.config.train, generator, steps=steps,
            objective=self.objective(exp, learner, targets),
        )  # fmt: skip
