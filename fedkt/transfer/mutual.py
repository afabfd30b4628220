"""Math of mutual learning between a client's own model and its shared companion (FML's
model and meme): pure functions on tensors, no Flower."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkt.transfer.losses import kl_distillation


def mutual_losses(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FML's pair of losses (Shen et al. 2020, Eqs. 1-2), each model learning from the
    other's prediction as a fixed target (deep mutual learning, Zhang et al. 2018):

        L_a = alpha * CE(y, p_a) + (1 - alpha) * KL(p_b || p_a)
        L_b = beta  * CE(y, p_b) + (1 - beta)  * KL(p_a || p_b)

    Because each target is detached, the gradient of ``L_a + L_b`` with respect to a
    model's weights is that of its own loss: one backward pass trains both."""
    pa = torch.softmax(logits_a, dim=-1).detach()
    pb = torch.softmax(logits_b, dim=-1).detach()
    loss_a = alpha * F.cross_entropy(logits_a, labels) + (1 - alpha) * kl_distillation(logits_a, pb)
    loss_b = beta * F.cross_entropy(logits_b, labels) + (1 - beta) * kl_distillation(logits_b, pa)
    return loss_a, loss_b
