"""FedProto as its paper trains it (Tan et al., AAAI 2022, Algorithm 1; HtFLlib's
``clientproto.py``): one pass of local training on CE + lambda * MSE(embedding, global
prototype of the label), with the global prototypes of the previous round; no exchange phase.

fedkt's ``fedproto`` splits the round in two [ours]: plain cross-entropy training, then an
exchange phase that distils this round's global prototypes on private data with the same
loss, a second pass. This method keeps the paper's single pass, so its optimiser steps and
passes over private data are those of local training (what HtFLlib does; the HtFLlib side by
side in BENCHMARKS.md compares it like for like). Each client keeps the prototypes it was sent
with its state (``Method.client_modules``) and adds the term from the next round on, as the
paper's clients do from round 2; a class without a global prototype adds nothing
(HtFLlib's clients use the embedding itself as the target there: the same). Prototypes are
extracted after training in a forward pass of their own (HtFLlib averages the embeddings of
its training batches, taken while the model changes). Under an exchange budget
(``budget: equal``) the budget goes to more of the same local training, as for every method
that distils nothing on the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedkt.errors import ConfigError
from fedkt.method import Method, register
from fedkt.methods.fedproto import PrototypeLoss
from fedkt.training import Fit, train_supervised

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


class PrototypeMemory(nn.Module):
    """The global prototypes a client was last sent, one row per class (NaN: none for that
    class), kept across rounds with its state (``filled`` once a first set arrived)."""

    value: torch.Tensor
    filled: torch.Tensor

    def __init__(self, classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("value", torch.full((classes, dim), float("nan")))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))


def _memory(learner: Learner) -> PrototypeMemory:
    memory = learner.extras["prototypes"]
    assert isinstance(memory, PrototypeMemory)
    return memory


class FedProtoLocal(Method):
    def validate(self, exp: Experiment) -> None:
        if any(s is not None for s in exp.students):
            raise ConfigError(
                "model.student: fedproto_local regularises each client's own model; no students"
            )

    def client_modules(self, exp: Experiment, learner: Learner) -> dict[str, nn.Module]:
        return {"prototypes": PrototypeMemory(exp.num_classes, learner.model.embedding_dim)}

    def receive(
        self, exp: Experiment, learner: Learner, target: np.ndarray, server_round: int
    ) -> dict[str, float]:
        memory = _memory(learner)
        if target.shape != tuple(memory.value.shape):
            raise ValueError(
                f"prototypes of shape {target.shape}, this client's model needs "
                f"{tuple(memory.value.shape)}"
            )
        memory.value.copy_(torch.as_tensor(target, dtype=torch.float32))
        memory.filled.fill_(True)
        return {}  # nothing distilled now: the prototypes shape the next local training

    def local_training(
        self, exp: Experiment, learner: Learner, generator: torch.Generator, steps: int | None
    ) -> Fit | None:
        memory, model = _memory(learner), learner.model
        if not bool(memory.filled):
            return None  # nothing received yet: plain local training (the paper's round 1)
        loss = PrototypeLoss(exp.params["weight"])
        protos = memory.value.to(next(model.parameters()).device)

        def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            h = model.embed(xb)
            return loss(model.head(h), protos[yb], yb, h)

        data = learner.data
        return train_supervised(
            model, data.train_x, data.train_y, exp.config.train, generator, steps=steps,
            objective=objective,
        )  # fmt: skip


register(
    "fedproto_local",
    FedProtoLocal(
        description=(
            "FedProto as its paper trains it: one local pass on CE + MSE to the previous "
            "round's global prototypes, no exchange phase"
        ),
        exchanges="per-class mean embeddings + counts (C x D + C floats)",
        knowledge="prototypes",
        fusion="class_mean",
        fusion_params={"exclude_self": False},
        fixed_parts=True,
        adopts_targets=True,
        params={"weight": 1.0},
    ),
)
