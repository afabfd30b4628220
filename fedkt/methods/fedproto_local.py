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
that distils nothing on the client (:class:`fedkt.single_pass.SinglePassMethod`,
shared with ``fd_local``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedkt.method import register
from fedkt.methods.fedproto import PrototypeLoss
from fedkt.single_pass import Objective, SinglePassMethod

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


class FedProtoLocal(SinglePassMethod):
    memory = "prototypes"

    def target_width(self, exp: Experiment, learner: Learner) -> int:
        return learner.model.embedding_dim

    def objective(self, exp: Experiment, learner: Learner, targets: torch.Tensor) -> Objective:
        loss, model = PrototypeLoss(exp.params["weight"]), learner.model

        def one_batch(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            h = model.embed(xb)
            return loss(model.head(h), targets[yb], yb, h)

        return one_batch


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
