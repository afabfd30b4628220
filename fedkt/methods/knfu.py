"""KnFu: effective knowledge fusion (Seyedmohammadi, Atapour, Abouei, Mohammadi; arXiv
2403.11892). Clients share soft labels on the transfer set; the server fuses, for each
client, only the knowledge of its "semantic neighbours", weighted by how effective that
knowledge is estimated to be for it; clients distil their personalised target.

The effectiveness formula is fedkt's reconstruction ([ours] in METHODS.md): the paper's
exact formulas could not be recovered, so ``beta`` = 10 is the paper's value of a
parameter in *our* formula, not a fact about the paper's.
"""

from __future__ import annotations

import numpy as np

from fedkt.method import SOFT_LABELS, Method, register
from fedkt.transfer.fusion import FUSIONS, Fusion
from fedkt.transfer.params import count, flag, non_negative

_EPS = 1e-12


def estimated_distributions(probs: np.ndarray) -> np.ndarray:
    """EPD_n = mean over the transfer set of p_n(x): each client's implied label distribution."""
    return np.asarray(probs, dtype=np.float64).mean(axis=1)


def kl_matrix(p: np.ndarray) -> np.ndarray:
    """d[n, m] = KL(p_n || p_m) for the rows of ``p`` (each a distribution)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, None)
    p = p / p.sum(axis=1, keepdims=True)
    logp = np.log(p)
    # KL(p_n || p_m) = sum_c p_n,c log p_n,c - sum_c p_n,c log p_m,c
    return (p * logp).sum(axis=1)[:, None] - p @ logp.T


def knfu_weights(
    probs: np.ndarray,
    beta: float = 10.0,
    threshold: float = 0.0,
    top_k: int | None = None,
    include_self: bool = True,
    scale: str = "none",
) -> np.ndarray:
    """KnFu effectiveness weights over semantic neighbours, ``probs`` (N, S, C) -> (N, N).

    [ours] w_nm = softmax_m(-beta * d_nm) with d_nm = KL(EPD_n || EPD_m); neighbours are
    the m with w_nm >= threshold (the strongest one is always kept), optionally only the
    ``top_k`` strongest; rows are renormalised over the neighbours. Clients whose
    predictions imply a similar label distribution are "semantic neighbours" whose
    knowledge is useful to each other; distant ones are down-weighted.

    ``scale="median"`` [ours, the ``knfu_rel`` variant] divides each receiver's
    divergences by the median of its divergences to the others, so beta no longer depends
    on the units and spread of the KL values: with raw KL in nats, off-diagonal values of
    1-3 at moderate heterogeneity make beta = 10 give a client (almost) only itself.
    """
    n = probs.shape[0]
    d = kl_matrix(estimated_distributions(probs))
    if n == 1:
        return np.ones((1, 1))  # a lone participant can only learn from itself
    if scale == "median":
        off = d[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        d = d / np.maximum(np.median(off, axis=1, keepdims=True), _EPS)
    elif scale != "none":
        raise ValueError(f"scale must be 'none' or 'median', got {scale!r}")
    logits = -beta * d
    if not include_self:
        np.fill_diagonal(logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    keep = w >= threshold
    if top_k is not None:
        order = np.argsort(-w, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(n)[None, :].repeat(n, axis=0), axis=1)
        keep &= ranks < top_k
    keep[np.arange(n), w.argmax(axis=1)] = True  # never leave a client without a teacher
    w = np.where(keep, w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


@FUSIONS.register("knfu")
class KnFuFusion(Fusion):
    """Personalised fusion of each client's semantic neighbours; see :func:`knfu_weights`."""

    spaces, domains = ("probs",), ("transfer",)

    def __init__(
        self,
        beta: float = 10.0,
        threshold: float = 0.0,
        top_k: int | None = None,
        include_self: bool = True,
        scale: str = "none",
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.beta = non_negative("beta", beta)
        self.threshold = float(threshold)
        self.top_k = None if top_k is None else count("top_k", top_k)
        self.include_self = flag("include_self", include_self)
        if scale not in ("none", "median"):
            raise ValueError(f"scale must be 'none' or 'median', got {scale!r}")
        self.scale = scale

    def weights(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return knfu_weights(
            values, self.beta, self.threshold, self.top_k, self.include_self, self.scale
        )


register(
    "knfu",
    Method(
        description=(
            "KnFu: personalised fusion of semantic neighbours' soft labels (EPD + KL "
            "effectiveness weights)"
        ),
        exchanges=SOFT_LABELS,
        knowledge="soft_labels",
        fusion="knfu",
        loss="kl",
    ),
)
register(
    "knfu_rel",
    Method(
        description="KnFu with relative divergences (each client's KL to the others divided by "
        "their median; beta 2): a variant that fuses at moderate heterogeneity [ours]",
        exchanges=SOFT_LABELS,
        knowledge="soft_labels",
        fusion="knfu",
        loss="kl",
        fusion_params={"scale": "median", "beta": 2.0},
    ),
)
