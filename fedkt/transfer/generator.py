"""Math of FedGen's data-free transfer (pure functions on tensors and arrays, no Flower):
a conditional generator of embeddings, the clients' heads as one ensemble, and the one
array a client receives (the averaged head and a pool of generated embeddings).
fedkt/methods/fedgen.py puts them together."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FeatureGenerator(nn.Module):
    """(noise, one-hot label) -> Linear -> BatchNorm -> ReLU -> Linear -> an embedding
    (HtFLlib's ``servergen.Generator``; the noise is passed in, so that a seeded caller
    decides it)."""

    def __init__(self, noise_dim: int, classes: int, hidden_dim: int, dim: int) -> None:
        super().__init__()
        self.noise_dim, self.classes = noise_dim, classes
        self.body = nn.Sequential(
            nn.Linear(noise_dim + classes, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()
        )
        self.out = nn.Linear(hidden_dim, dim)

    def forward(self, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.classes).to(noise.dtype)
        return self.out(self.body(torch.cat([noise, onehot], dim=1)))


def ensemble_logits(
    heads: torch.Tensor, weights: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """sum_n w_n * (features @ W_n^T + b_n): the clients' linear heads, ``heads`` (N, C,
    D + 1) in :func:`fedkt.transfer.prototypes.head_matrix`'s layout, as one classifier
    of the (B, D) ``features``."""
    per_client = torch.einsum("bd,ncd->nbc", features, heads[:, :, :-1]) + heads[:, None, :, -1]
    return torch.einsum("n,nbc->bc", weights, per_client)


def pack(head: np.ndarray, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The (C + P, D + 1) array a FedGen client receives: the head's C rows, then P
    generated embeddings, each with its label in the last column."""
    pool = np.concatenate([features, np.asarray(labels, dtype=features.dtype)[:, None]], axis=1)
    return np.concatenate([head, pool], axis=0).astype(np.float32)


def unpack(
    target: np.ndarray, classes: int, pool: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack` for a pool of shape ``pool`` (P, D): (head, features,
    labels); raises ValueError on an array that cannot be one (another shape, non-finite
    values, labels that are not class ids)."""
    t = np.asarray(target)
    if t.shape != (classes + pool[0], pool[1] + 1):
        want = (classes + pool[0], pool[1] + 1)
        raise ValueError(f"FedGen target has shape {t.shape}, expected {want}")
    labels = t[classes:, -1]
    if (
        not np.isfinite(t).all()
        or ((labels != np.round(labels)) | (labels < 0)).any()
        or (labels >= classes).any()
    ):
        raise ValueError("FedGen target holds non-finite values or labels that are no class")
    return t[:classes], t[classes:, :-1], labels.astype(np.int64)


def train_generator(
    net: FeatureGenerator,
    heads: torch.Tensor,
    weights: torch.Tensor,
    prior: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    pool_size: int,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FedGen's server step: ``steps`` Adam steps (a fresh optimiser each round, as the
    reference) on CE(ensemble of the heads(G(y, noise)), y), labels y drawn from ``prior``
    (the uploaded label distribution) and uniform noise, both from ``g``; then a pool of
    ``pool_size`` generated embeddings (BatchNorm in eval mode) and their labels."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        y = torch.multinomial(prior, batch_size, replacement=True, generator=g)
        z = net(y, torch.rand(batch_size, net.noise_dim, generator=g))
        loss = F.cross_entropy(ensemble_logits(heads, weights, z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.multinomial(prior, pool_size, replacement=True, generator=g)
    with torch.no_grad():
        pool = net.eval()(y, torch.rand(pool_size, net.noise_dim, generator=g))
    return pool, y


class GeneratedPool(nn.Module):
    """A FedGen client's pool of generated embeddings and their labels, kept across
    rounds with its state (``filled`` once a first pool arrived)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("x", torch.zeros(size, dim))
        self.register_buffer("y", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))
