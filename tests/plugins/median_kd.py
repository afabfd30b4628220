"""A transfer method defined outside fedkt, as a user would (CONTRIBUTING.md's example):
one file with its fusion rule and its method declaration. Loaded through the config's
``plugins`` list, so every simulation worker registers it too."""

from __future__ import annotations

import numpy as np

from fedkt.method import SOFT_LABELS, Method, register
from fedkt.transfer.fusion import FUSIONS, Fusion, FusionResult


def median_target(probs: np.ndarray) -> np.ndarray:
    """Per-sample, per-class median of the clients' soft labels (N, S, C) -> (S, C),
    renormalised to sum to one: robust to a minority of outlying teachers."""
    med = np.median(np.asarray(probs, dtype=np.float64), axis=0)
    return med / med.sum(axis=-1, keepdims=True)


@FUSIONS.register("median")
class MedianFusion(Fusion):
    spaces, domains = ("probs",), ("transfer",)

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        n = values.shape[0]
        target = median_target(values)
        return FusionResult(
            np.repeat(target[None], n, axis=0).astype(np.float32), np.full((n, n), 1.0 / n)
        )


class MedianKD(Method):
    def anchor_weight(self, exp) -> float:
        return float(exp.params["anchor"])  # its own protocol: always anchored on private data


register(
    "median_kd",
    MedianKD(
        description="federated KD with the per-sample median of the soft labels (a plugin example)",
        exchanges=SOFT_LABELS,
        knowledge="soft_labels",
        fusion="median",
        loss="kl",
        params={"anchor": 0.5},
    ),
)
