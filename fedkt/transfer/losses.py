"""Distillation losses: how a student learns from a target.

A loss is called as ``loss(logits, target, labels=None, features=None)`` and returns a
scalar tensor. ``target`` rows are in the space the loss ``expects`` (``"probs"``,
``"logits"`` or ``"embedding"``); the learner converts logit knowledge to probabilities
(softmax at the exchange temperature) for losses that expect probabilities. Rows of
``target`` that are NaN mean "no target here" (FD/FedProto classes nobody else holds):
losses skip them in the distillation term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkt.registry import Registry
from fedkt.transfer.params import positive

LOSSES: Registry["DistillationLoss"] = Registry("loss")


class DistillationLoss:
    """Base class. ``needs_labels``: the loss uses ground-truth labels of the samples it
    is applied to; ``uses_features``: it needs the student's embeddings."""

    needs_labels = False
    uses_features = False
    expects = "probs"

    def __call__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def rows_with_target(target: torch.Tensor) -> torch.Tensor:
    """Boolean mask of rows that carry a target."""
    return torch.isfinite(target).all(dim=-1)


def masked_mean(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a target; zero (with gradient graph) when there is none."""
    return (per_row * mask).sum() / mask.sum().clamp(min=1)


def kl_distillation(
    logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Hinton et al.'s term T^2 * KL(target || softmax(z / T)), mean over rows with a target.

    The T^2 factor keeps gradient magnitudes comparable across temperatures.
    """
    mask = rows_with_target(target)
    t = torch.where(mask[:, None], target, torch.zeros_like(target))
    log_student = F.log_softmax(logits / temperature, dim=-1)
    kl = (torch.xlogy(t, t) - t * log_student).sum(dim=-1)
    return masked_mean(kl, mask) * temperature**2


class TemperatureLoss(DistillationLoss):
    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = positive("temperature", temperature)


@LOSSES.register("kl")
class KLLoss(TemperatureLoss):
    """Hinton KD: T^2 * KL(p_target || p_student^T)."""

    def __call__(self, logits, target, labels=None, features=None):
        return kl_distillation(logits, target, self.temperature)


@LOSSES.register("soft_ce")
class SoftCrossEntropyLoss(TemperatureLoss):
    """Soft-label cross-entropy -sum_c t_c log p_c (DS-FL's distillation on ERA targets).

    Differs from KL by the target's entropy, a constant for the student, so gradients
    match KL's; kept separate because its value is what DS-FL reports.
    """

    def __call__(self, logits, target, labels=None, features=None):
        mask = rows_with_target(target)
        t = torch.where(mask[:, None], target, torch.zeros_like(target))
        ce = -(t * F.log_softmax(logits / self.temperature, dim=-1)).sum(dim=-1)
        return masked_mean(ce, mask) * self.temperature**2


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(p, p)).sum(dim=-1)


def reverse_kl_distillation(
    logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Per-row T^2 * KL(softmax(z / T) || target): mode-seeking, the student concentrates
    on the target's dominant classes. Rows without a target contribute 0."""
    mask = rows_with_target(target)
    t = torch.where(mask[:, None], target, torch.ones_like(target))
    log_s = F.log_softmax(logits / temperature, dim=-1)
    kl = (log_s.exp() * (log_s - torch.log(t.clamp(min=1e-12)))).sum(dim=-1)
    return torch.where(mask, kl, torch.zeros_like(kl)) * temperature**2


@LOSSES.register("reverse_kl")
class ReverseKLLoss(TemperatureLoss):
    """Reverse KD: T^2 * KL(p_student^T || p_target)."""

    def __call__(self, logits, target, labels=None, features=None):
        return masked_mean(
            reverse_kl_distillation(logits, target, self.temperature), rows_with_target(target)
        )


@LOSSES.register("bdkd")
class BalancedKLLoss(TemperatureLoss):
    """BD-KD (balancing the divergences): a per-sample mix of forward and reverse KL.

    [ours] weight: w = sigmoid(H(p_s) - H(p_t)) on the reverse (mode-seeking) KL and 1 - w on
    the forward (mass-covering) KL. A student flatter than its target is pushed to sharpen;
    one sharper than its target is pushed to spread. The weight carries no gradient.
    """

    def __call__(self, logits, target, labels=None, features=None):
        mask = rows_with_target(target)
        t = torch.where(mask[:, None], target, torch.zeros_like(target))
        log_s = F.log_softmax(logits / self.temperature, dim=-1)
        forward = (torch.xlogy(t, t) - t * log_s).sum(dim=-1) * self.temperature**2
        reverse = reverse_kl_distillation(logits, target, self.temperature)
        w = torch.sigmoid(_entropy(log_s.exp()) - _entropy(t)).detach()
        return masked_mean(w * reverse + (1 - w) * forward, mask)


def estimated_label_weight(target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """alpha = 1 - mean_i target_i[y_i]: how much of the target's mass misses the true labels.

    [ours] estimate for ``gt_weighted``: a target that puts all its mass on the right
    classes gets alpha = 0 (pure distillation, the labels add nothing); one that mostly
    misses them gets alpha near 1 (lean on the labels). Rows without a target are left
    out; with none at all, alpha = 1. No gradient flows through alpha.
    """
    mask = rows_with_target(target)
    if not mask.any():
        return torch.ones((), dtype=torch.float32, device=target.device)
    hit = target[mask].gather(1, labels[mask][:, None]).squeeze(1)
    return (1.0 - hit.mean()).clamp(0.0, 1.0).detach()


@LOSSES.register("gt_weighted")
class GroundTruthWeightedLoss(TemperatureLoss):
    """alpha * CE(y, p_s) + (1 - alpha) * T^2 * KL(target || p_s^T) (Hinton's original mix).

    ``alpha`` is a fixed number in [0, 1] or ``"auto"``, estimated per batch from how well
    the target agrees with the labels (:func:`estimated_label_weight`). Needs labels on the
    samples it distils on (``transfer.labelled: true`` for transfer-set knowledge).
    """

    needs_labels = True

    def __init__(self, temperature: float = 1.0, alpha: float | str = 0.5) -> None:
        super().__init__(temperature)
        if isinstance(alpha, str):
            if alpha != "auto":
                raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
        elif (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 <= alpha <= 1.0
        ):
            raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
        self.alpha = alpha if isinstance(alpha, str) else float(alpha)

    def __call__(self, logits, target, labels=None, features=None):
        if labels is None:
            raise ValueError("gt_weighted needs labels")
        alpha = estimated_label_weight(target, labels) if self.alpha == "auto" else self.alpha
        return alpha * F.cross_entropy(logits, labels) + (1 - alpha) * kl_distillation(
            logits, target, self.temperature
        )


@LOSSES.register("tgeo")
class GeometryWeightedLoss(TemperatureLoss):
    """Per-sample KD/CE ratio from the geometry of student S, teacher T and ground truth G.

    [ours] closed heuristic (the learned MLP of "Less or More From Teacher" needs held-out
    labelled data we do not assume): alpha_i = sigmoid(scale * (||s_i - g_i|| - ||t_i - g_i||)),
    the more the teacher is closer to the truth than the student, the more the sample is
    distilled; loss_i = alpha_i * T^2 KL(t_i || s_i) + (1 - alpha_i) * CE(y_i, s_i).
    alpha carries no gradient.
    """

    needs_labels = True

    def __init__(self, temperature: float = 1.0, scale: float = 5.0) -> None:
        super().__init__(temperature)
        self.scale = positive("scale", scale)

    def __call__(self, logits, target, labels=None, features=None):
        if labels is None:
            raise ValueError("tgeo needs labels")
        mask = rows_with_target(target)
        t = torch.where(mask[:, None], target, torch.zeros_like(target))
        log_s = F.log_softmax(logits / self.temperature, dim=-1)
        g = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        s = log_s.exp().detach()
        alpha = torch.sigmoid(self.scale * ((s - g).norm(dim=-1) - (t - g).norm(dim=-1)))
        alpha = torch.where(mask, alpha, torch.zeros_like(alpha))
        kd = (torch.xlogy(t, t) - t * log_s).sum(dim=-1) * self.temperature**2
        ce = F.cross_entropy(logits, labels, reduction="none")
        return (alpha * kd + (1 - alpha) * ce).mean()
