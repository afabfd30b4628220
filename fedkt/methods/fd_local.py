"""FD as its paper trains it (Jeong et al., 2018, Algorithm 1; HtFLlib's ``clientfd.py``): one
pass of local training on CE + lambda * distillation towards the global mean logits of the
label, from the previous round; no exchange phase.

fedkt's ``fd`` splits the round in two [ours]: plain cross-entropy training, then an exchange
phase that distils this round's fused logits on private data with the same loss, a second
pass. This method keeps the paper's single pass, so its optimiser steps and passes over
private data are those of local training (what HtFLlib does; the HtFLlib side by side in
BENCHMARKS.md compares it like for like). The parts are ``fd``'s: per-class mean logits over
private data, fused per class over the *other* clients holding the class (the paper's
global average less the client's own), and its loss, CE + weight * T^2 * KL(softmax(target
/ T) || softmax(logits / T)) (the ``ce_kl`` loss); a class nobody else holds adds nothing.
Where we differ from the paper, and HtFLlib: the logits a client shares are taken after
its training, in a forward pass of their own (theirs average the outputs of the training
batches while the model changes), as ``fedproto_local`` does for prototypes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fedkt.method import register
from fedkt.methods.fd import CEPlusKLLoss
from fedkt.single_pass import Objective, SinglePassMethod

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


class FDLocal(SinglePassMethod):
    memory = "logits"

    def check_param(self, name: str, value: Any) -> Any:
        value = super().check_param(name, value)
        if name == "temperature" and value == 0:
            raise ValueError("temperature must be > 0, got 0")
        return value

    def target_width(self, exp: Experiment, learner: Learner) -> int:
        return exp.num_classes

    def objective(self, exp: Experiment, learner: Learner, targets: torch.Tensor) -> Objective:
        temperature = float(exp.params["temperature"])
        loss = CEPlusKLLoss(temperature, exp.params["weight"])
        soft = torch.softmax(targets / temperature, dim=1)  # a NaN row stays NaN: no term
        model = learner.model

        def one_batch(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return loss(model(xb), soft[yb], yb)

        return one_batch


register(
    "fd_local",
    FDLocal(
        description=(
            "FD as its paper trains it: one local pass on CE + KL to the previous round's "
            "per-class mean logits of the other clients, no exchange phase"
        ),
        exchanges="per-class mean logits + counts (C x C + C floats), no transfer set",
        knowledge="class_logits",
        fusion="class_mean",
        fusion_params={"exclude_self": True},
        fixed_parts=True,
        adopts_targets=True,
        params={"weight": 1.0, "temperature": 1.0},
    ),
)
