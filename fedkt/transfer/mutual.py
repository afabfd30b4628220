"""Math of mutual learning between a client's own model and its shared companion (FML's
model and meme, FedKD's mentor and mentee): pure functions on tensors, no Flower."""

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


def adaptive_mutual_losses(
    logits_t: torch.Tensor,
    logits_s: torch.Tensor,
    hidden_t: torch.Tensor,
    hidden_s: torch.Tensor,
    labels: torch.Tensor,
    hidden_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FedKD's adaptive mutual distillation (Wu et al. 2022) of a mentor t and a mentee s,
    ``hidden_s`` the mentee's hidden state mapped to the mentor's size (W_h H_s):

        w   = 1 / (CE(y, p_t) + CE(y, p_s))      (both right: learn more from each other)
        L_t = CE(y, p_t) + w * KL(p_s || p_t) + w * MSE(H_t, W_h H_s)
        L_s = CE(y, p_s) + w * KL(p_t || p_s) + w * MSE(H_t, W_h H_s)

    [ours] The weight w carries no gradient (through it, a model would be rewarded for a
    larger task loss), and each model's terms take the other's output as a fixed target,
    so one backward pass of ``L_t + L_s`` gives each model (and W_h, with the mentee) its
    own loss's gradient. ``hidden_weight`` scales the hidden-state terms (1 in the paper).
    """
    ce_t = F.cross_entropy(logits_t, labels)
    ce_s = F.cross_entropy(logits_s, labels)
    w = 1.0 / (ce_t + ce_s).detach().clamp(min=1e-8)
    pt = torch.softmax(logits_t, dim=-1).detach()
    ps = torch.softmax(logits_s, dim=-1).detach()
    mse_t = F.mse_loss(hidden_t, hidden_s.detach())
    mse_s = F.mse_loss(hidden_t.detach(), hidden_s)
    loss_t = ce_t + w * (kl_distillation(logits_t, ps) + hidden_weight * mse_t)
    loss_s = ce_s + w * (kl_distillation(logits_s, pt) + hidden_weight * mse_s)
    return loss_t, loss_s
