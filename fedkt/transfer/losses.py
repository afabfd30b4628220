"""Distillation losses: how a student learns from a target distribution.

A loss is called as ``loss(student_logits, target_probs, labels=None)`` and returns a
scalar tensor. ``target_probs`` are the fused soft labels the server sent (already at
the exchange temperature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkt.registry import Registry

LOSSES: Registry["DistillationLoss"] = Registry("loss")


class DistillationLoss:
    """Base class; ``needs_labels`` marks losses that need labels on the transfer set."""

    needs_labels = False

    def __call__(
        self,
        student_logits: torch.Tensor,
        target_probs: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def kl_distillation(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Hinton et al.'s distillation term T^2 * KL(target || softmax(z_s / T)), batch mean.

    The T^2 factor keeps gradient magnitudes comparable across temperatures.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, target_probs, reduction="batchmean")
    return kl * temperature**2


@LOSSES.register("kl")
class KLLoss(DistillationLoss):
    """Hinton KD: T^2 * KL(p_target || p_student^T)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, student_logits, target_probs, labels=None):  # type: ignore[override]
        return kl_distillation(student_logits, target_probs, self.temperature)
