"""Math of prototype-based transfer (pure functions on tensors and arrays, no Flower):
FedTGP's adaptive margin, its margin-enhanced contrastive loss and its prototype generator
(fedkt/methods/fedtgp.py puts them together as a fusion)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def adaptive_margin(values: np.ndarray, present: np.ndarray, cap: float) -> float:
    """``min(max_c min_{c' != c} ||Q_c - Q_c'||, cap)`` over the classes someone uploaded,
    Q_c the plain mean of the uploaded prototypes of class c (0 with fewer than 2 classes)."""
    classes = np.flatnonzero(present.any(axis=0))
    if len(classes) < 2:
        return 0.0
    q = np.stack([values[present[:, c], c].mean(axis=0) for c in classes])
    gaps = np.linalg.norm(q[:, None, :] - q[None, :, :], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    return float(min(gaps.min(axis=1).max(), cap))


def margin_loss(
    protos: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, margin: float
) -> torch.Tensor:
    """FedTGP's server loss for uploaded ``protos`` (B, D) of classes ``labels`` against the
    global prototypes ``centres`` (C, D)."""
    dist = torch.cdist(protos, centres)
    dist = dist + margin * F.one_hot(labels, centres.shape[0]).to(dist.dtype)
    return F.cross_entropy(-dist, labels)


class PrototypeGenerator(nn.Module):
    """The trainable global prototypes: class id -> embedding -> Linear -> ReLU -> Linear."""

    def __init__(self, classes: int, dim: int) -> None:
        super().__init__()
        self.classes = nn.Embedding(classes, dim)
        self.middle = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.out = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.middle(self.classes(ids)))
