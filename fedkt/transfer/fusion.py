"""Server-side fusion rules: given every participating client's knowledge, what target
does client *i* receive?

Knowledge arrives as a stack ``values`` of shape ``(N, S, K)``: N clients' rows (S
transfer samples or S classes) of K numbers, plus ``counts`` of shape ``(N,)`` (private
sample counts) or ``(N, S)`` (per-class counts). A fusion returns one target per client,
``(N, S, K)`` (NaN rows: no target for that row), and the ``(N, N)`` weight matrix that
produced it, so every run can explain who learned from whom. Pure functions on arrays
(NumPy; SADE's small optimisation uses torch autograd on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedkt.registry import Registry
from fedkt.transfer.params import count, flag, positive

_EPS = 1e-12


@dataclass(frozen=True)
class FusionResult:
    """Targets ``(N, S, K)`` for each client and the weights ``(N, N)`` behind them."""

    targets: np.ndarray
    weights: np.ndarray


def _check(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"knowledge must be (clients, rows, values), got {values.shape}")
    if counts.shape not in ((values.shape[0],), values.shape[:2]):
        raise ValueError(f"counts must be (clients,) or (clients, rows), got {counts.shape}")
    return values, counts


def module_arrays(module: torch.nn.Module, prefix: str = "net.") -> dict[str, np.ndarray]:
    """A fusion's network as plain arrays for its :meth:`Fusion.state_dict` (FedTGP's
    prototype generator, FedGen's generator)."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_arrays(
    module: torch.nn.Module, state: dict[str, Any], prefix: str = "net."
) -> None:
    """Inverse of :func:`module_arrays`."""
    module.load_state_dict(
        {
            k[len(prefix) :]: torch.as_tensor(np.asarray(v))
            for k, v in state.items()
            if k.startswith(prefix)
        }
    )


class Fusion:
    """Base class: subclasses implement :meth:`weights`; the fused target is then the
    weight-normalised mixture of the clients' knowledge (one matrix product).

    ``spaces`` / ``domains`` say which knowledge a fusion is meaningful for (checked
    when a config is validated)."""

    spaces: tuple[str, ...] = ("probs", "logits", "embedding")
    domains: tuple[str, ...] = ("transfer", "class")
    views: int = 1  #: views of each transfer sample the fusion learns from
    #: What the targets are when they are not knowledge of the clients' own kind: "head"
    #: (FedGH's header, a part of a model that clients adopt; no loss can distil it).
    targets_space: str | None = None

    def weights(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fuse_round(self, values: list[np.ndarray], counts: list[np.ndarray]) -> FusionResult:
        """Fuse one round's knowledge as the server receives it: per participant, its
        values and its counts, either per-class counts (knowledge that reports them) or a
        one-element array holding its training-sample count. The server, the client-side
        diagnosis and the tests all fuse through here."""
        stacked = np.stack([np.atleast_1d(np.asarray(c, dtype=np.float64)) for c in counts])
        return self.fuse(np.stack(values), stacked[:, 0] if stacked.shape[1] == 1 else stacked)

    def state_dict(self) -> dict[str, Any]:
        """What a fusion learns across rounds (arrays and plain values; most learn nothing):
        kept in the server's checkpoint so a resumed run continues the same fusion."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        values, counts = _check(values, counts)
        w = self.weights(values, counts)
        targets = np.einsum("nm,msk->nsk", w, values)
        return FusionResult(targets=targets.astype(np.float32), weights=w)


FUSIONS: Registry[Fusion] = Registry("fusion")


def _client_totals(counts: np.ndarray) -> np.ndarray:
    return counts if counts.ndim == 1 else counts.sum(axis=1)


@FUSIONS.register("mean")
class MeanFusion(Fusion):
    """Vanilla federated KD / FedMD consensus: every client receives the same average.

    ``weighting="samples"`` weights clients by their private sample counts instead.
    Per-class knowledge needs count-aware fusion (``class_mean``), not this one.
    """

    domains = ("transfer",)

    def __init__(self, weighting: str = "uniform") -> None:
        if weighting not in ("uniform", "samples"):
            raise ValueError(f"weighting must be 'uniform' or 'samples', got {weighting!r}")
        self.weighting = weighting

    def weights(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        n = values.shape[0]
        row = (
            np.ones(n) if self.weighting == "uniform" else _client_totals(counts).astype(np.float64)
        )
        if row.sum() <= 0:
            row = np.ones(n)
        return np.tile(row / row.sum(), (n, 1))


@FUSIONS.register("weighted")
class WeightedMeanFusion(MeanFusion):
    """The mean weighted by each client's private sample count (FedAvg-style weighting)."""

    def __init__(self) -> None:
        super().__init__("samples")


@FUSIONS.register("kd_dp")
class MostConfidentFusion(Fusion):
    """Per-sample most confident teacher (after "Fantastic Gains", KD-DP, unsupervised form).

    For every transfer sample the target is the prediction of whichever participant is most
    confident (largest max probability) on it; the receiver's own (frozen) prediction is
    among the candidates, so a client is only overruled where someone is surer than it is.
    Ties go to the lowest partition id.
    """

    spaces, domains = ("probs",), ("transfer",)

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        values, counts = _check(values, counts)
        n, s, _ = values.shape
        chosen = values.max(axis=2).argmax(axis=0)  # (S,) teacher index per sample
        target = values[chosen, np.arange(s)]  # (S, K)
        weights = np.tile(np.bincount(chosen, minlength=n) / s, (n, 1))
        return FusionResult(np.repeat(target[None], n, axis=0).astype(np.float32), weights)


def dlf_weights(probs: np.ndarray, iterations: int = 50, step: float = 1.0) -> np.ndarray:
    """Per-sample teacher weights on the simplex minimising sum_m KL(p_w || p_m), where
    p_w = sum_m w_m p_m.

    [ours] reading of Dynamic Logit Fusion's KL-constrained weights (METHODS.md): the fused
    target should stay close, in KL, to every teacher at once. Solved by exponentiated
    gradient (mirror descent on the simplex) from uniform weights; ``probs`` is (N, S, C),
    the result (S, N).
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, None)
    p /= p.sum(axis=2, keepdims=True)
    n, s, _ = p.shape
    logp = np.log(p)  # (N, S, C)
    w = np.full((s, n), 1.0 / n)
    for _ in range(iterations):
        fused = np.einsum("sn,nsc->sc", w, p)
        # d/dp_w of sum_j KL(p_w || p_j) = sum_j (log p_w - log p_j + 1);
        # chain rule through p_w = sum_m w_m p_m
        grad_p = n * (np.log(fused) + 1.0) - logp.sum(axis=0)  # (S, C)
        grad_w = np.einsum("nsc,sc->sn", p, grad_p)
        w = w * np.exp(-step * (grad_w - grad_w.min(axis=1, keepdims=True)))
        w /= w.sum(axis=1, keepdims=True)
    return w


@FUSIONS.register("dlf")
class DynamicLogitFusion(Fusion):
    """Per-sample KL-constrained teacher weights (see :func:`dlf_weights`); every client
    receives the same fused target. ``weights`` reports the mean per-sample weights."""

    spaces, domains = ("probs",), ("transfer",)

    def __init__(self, iterations: int = 50, step: float = 1.0) -> None:
        self.iterations = count("iterations", iterations)
        self.step = positive("step", step)

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        values, counts = _check(values, counts)
        n = values.shape[0]
        w = dlf_weights(values, self.iterations, self.step)  # (S, N)
        target = np.einsum("sn,nsc->sc", w, values)
        return FusionResult(
            np.repeat(target[None], n, axis=0).astype(np.float32), np.tile(w.mean(axis=0), (n, 1))
        )


def sade_weights(probs: np.ndarray, steps: int = 200, lr: float = 0.05) -> np.ndarray:
    """Teacher weights w = softmax(a) maximising the agreement of the fused prediction
    across two views (after SADE's test-time self-supervised aggregation).

    ``probs`` is (N, 2S, C): rows 0..S-1 are each teacher's predictions on the samples,
    rows S..2S-1 on their second view. The objective is the mean cosine similarity of
    p_w(view 1) and p_w(view 2), p_w = sum_m w_m p_m: teachers whose predictions are stable
    under perturbation of the input are trusted more. Unlabelled, so it runs on the
    server; Adam on ``a`` from a = 0 (uniform), deterministic. Returns w, shape (N,).
    """
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    n, rows, _ = p.shape
    if rows % 2:
        raise ValueError(
            f"sade needs two views of each transfer sample (an even number of rows), got {rows} "
            "rows"
        )
    first, second = p[:, : rows // 2], p[:, rows // 2 :]
    a = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a], lr=lr)
    for _ in range(steps):
        w = torch.softmax(a, dim=0)
        agreement = F.cosine_similarity(
            torch.einsum("n,nsc->sc", w, first), torch.einsum("n,nsc->sc", w, second), dim=-1
        )
        loss = -agreement.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(a.detach(), dim=0).numpy()


@FUSIONS.register("sade")
class SelfSupervisedAggregation(Fusion):
    """SADE-style fusion: one weight per teacher, learnt on the unlabelled transfer set
    from agreement across two views (see :func:`sade_weights`); every client receives
    the same fused target on both views. Needs ``transfer.views: 2``."""

    spaces, domains = ("probs",), ("transfer",)
    views = 2

    def __init__(self, steps: int = 200, lr: float = 0.05) -> None:
        self.steps = count("steps", steps)
        self.lr = positive("lr", lr)

    def weights(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        w = sade_weights(values, self.steps, self.lr)
        return np.tile(w, (values.shape[0], 1))


@FUSIONS.register("class_mean")
class ClassMeanFusion(Fusion):
    """Per-row mean weighted by per-row counts, optionally excluding the receiver.

    FD (Jeong et al.): for each class, the mean of the other clients' per-class logits
    over clients that hold the class (``exclude_self=True``). FedProto: the global
    prototype of each class (``exclude_self=False``). Rows nobody else holds get NaN:
    the receiver then has no target for that class.
    """

    def __init__(self, exclude_self: bool = True) -> None:
        self.exclude_self = flag("exclude_self", exclude_self)

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        values, counts = _check(values, counts)
        n, s, _ = values.shape
        c = counts if counts.ndim == 2 else np.repeat(counts[:, None], s, axis=1)
        mask = np.ones((n, n)) - (np.eye(n) if self.exclude_self else 0.0)
        contrib = mask[:, :, None] * c[None, :, :]  # (receiver, sender, row)
        total = contrib.sum(axis=1)  # (receiver, row)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = contrib / total[:, None, :]
        targets = np.einsum("nms,msk->nsk", np.nan_to_num(share), values)
        targets[total == 0] = np.nan
        weights = np.nanmean(np.where(total[:, None, :] > 0, share, np.nan), axis=2)
        weights = np.nan_to_num(weights)
        return FusionResult(targets.astype(np.float32), weights)
