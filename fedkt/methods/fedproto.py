"""FedProto (Tan et al., 2022): clients share per-class mean embeddings (prototypes); the
server averages them per class; clients train on private data with
CE + lambda * MSE(embedding, global prototype of the label)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkt.method import Method, register
from fedkt.transfer.losses import LOSSES, DistillationLoss, masked_mean, rows_with_target
from fedkt.transfer.params import non_negative


@LOSSES.register("proto")
class PrototypeLoss(DistillationLoss):
    """FedProto's loss: CE(y, p_s) + lambda * MSE(f(x), global prototype of y)."""

    needs_labels = True
    uses_features = True
    expects = "embedding"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = non_negative("weight", weight)

    def __call__(self, logits, target, labels=None, features=None):
        if labels is None or features is None:
            raise ValueError("proto needs labels and features")
        mask = rows_with_target(target)
        t = torch.where(mask[:, None], target, features.detach())
        mse = ((features - t) ** 2).mean(dim=-1)
        return F.cross_entropy(logits, labels) + self.weight * masked_mean(mse, mask)


register(
    "fedproto",
    Method(
        description=(
            "FedProto (Tan et al.): class prototypes, per-class global mean, CE + MSE to prototypes"
        ),
        exchanges="per-class mean embeddings + counts (C x D + C floats)",
        knowledge="prototypes",
        fusion="class_mean",
        loss="proto",
        fusion_params={"exclude_self": False},
    ),
)
