"""FD (Jeong et al., 2018): federated distillation without a transfer set. Clients share
their per-class mean logits over private data; each receives, per class, the mean over
the *other* clients holding that class, and trains on private data with
CE + lambda * KL(softmax(mean logits of its label) || student)."""

from __future__ import annotations

import torch.nn.functional as F

from fedkt.method import Method, register
from fedkt.transfer.losses import LOSSES, TemperatureLoss, kl_distillation
from fedkt.transfer.params import non_negative


@LOSSES.register("ce_kl")
class CEPlusKLLoss(TemperatureLoss):
    """FD's loss: CE(y, p_s) + lambda * T^2 * KL(target_y || p_s^T) on private data."""

    needs_labels = True

    def __init__(self, temperature: float = 1.0, weight: float = 1.0) -> None:
        super().__init__(temperature)
        self.weight = non_negative("weight", weight)

    def __call__(self, logits, target, labels=None, features=None):
        if labels is None:
            raise ValueError("ce_kl needs labels")
        return F.cross_entropy(logits, labels) + self.weight * kl_distillation(
            logits, target, self.temperature
        )


register(
    "fd",
    Method(
        description=(
            "FD (Jeong et al.): per-class mean logits, fused per class excluding the receiver, "
            "CE + KL on private data"
        ),
        exchanges="per-class mean logits + counts (C x C + C floats), no transfer set",
        knowledge="class_logits",
        fusion="class_mean",
        loss="ce_kl",
        fusion_params={"exclude_self": True},
    ),
)
