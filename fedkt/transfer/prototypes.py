"""Math of prototype-based transfer (pure functions on tensors and arrays, no Flower):
FedTGP's adaptive margin, its margin-enhanced contrastive loss and its prototype generator;
the uploaded (client, class) pairs a server trains on and the SGD passes over them (FedTGP,
FedGH); a linear head as a per-class array and back (FedGH's global head).
fedkt/methods/fedtgp.py and fedgh.py put them together as fusions."""

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


def uploaded(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N, C) mask of the (client, class) prototypes that were uploaded: a positive
    count (per-class counts) and finite values. FedTGP's and FedGH's servers train on
    exactly these pairs, one training sample each."""
    n, c = values.shape[:2]
    present = counts > 0 if counts.ndim == 2 else np.ones((n, c), dtype=bool)
    return present & np.isfinite(values).all(axis=-1)


def upload_shares(present: np.ndarray) -> np.ndarray:
    """Each client's share of the uploaded pairs (uniform when nobody uploaded): how much
    it trained the server's model, reported as its fusion weight."""
    share = present.sum(axis=1).astype(np.float64)
    return share / share.sum() if share.sum() > 0 else np.full(len(share), 1.0 / len(share))


def sgd_epochs(
    params,
    size: int,
    batch_loss,
    epochs: int,
    lr: float,
    batch_size: int,
    order: torch.Generator,
) -> float:
    """Plain SGD over ``size`` samples for ``epochs`` shuffled passes (``order`` draws
    the permutations); ``batch_loss(indices)`` returns a batch's loss. Returns the last
    batch's loss (0.0 when there is nothing to train on)."""
    last = 0.0
    if size == 0:
        return last
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(size, generator=order)
        for start in range(0, size, batch_size):
            loss = batch_loss(perm[start : start + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = float(loss.detach())
    return last


def head_matrix(head: nn.Linear) -> np.ndarray:
    """A linear head as one ``(C, D + 1)`` array: its weight, then its bias column (how
    FedGH's server sends its global head as a per-class target)."""
    with torch.no_grad():
        return torch.cat([head.weight, head.bias[:, None]], dim=1).cpu().numpy().copy()


def load_head(head: nn.Module, matrix: np.ndarray) -> None:
    """Overwrite a model's linear ``head`` with ``matrix`` (:func:`head_matrix`'s layout);
    raises ValueError naming the mismatch when the head is not a Linear of that shape."""
    m = np.asarray(matrix)
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ValueError(f"the model's head is a {type(head).__name__}, not a linear layer")
    want = (head.out_features, head.in_features + 1)
    if m.shape != want:
        raise ValueError(f"received head has shape {m.shape}, the model's is {want}")
    if not np.isfinite(m).all():
        raise ValueError("received head contains NaN or infinite values")
    t = torch.as_tensor(m, dtype=head.weight.dtype, device=head.weight.device)
    with torch.no_grad():
        head.weight.copy_(t[:, :-1])
        head.bias.copy_(t[:, -1])
