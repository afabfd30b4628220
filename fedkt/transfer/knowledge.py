"""Client-side knowledge: what a client shares, and the server's check of what arrives.

Knowledge never depends on the architecture that produced it: predictions on shared
transfer samples, or per-class tables. Each kind declares

- ``domain``: ``"transfer"`` (one row per transfer sample) or ``"class"`` (one row per
  class, with per-class counts), which decides where the fused target is distilled;
- ``space``: ``"probs"``, ``"logits"``, ``"embedding"`` or ``"head"`` (a model's linear
  head, FedGen), which losses and fusions check against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fedkt.errors import KnowledgeError
from fedkt.registry import Registry
from fedkt.training import EVAL_BATCH, predict
from fedkt.transfer.params import positive
from fedkt.transfer.prototypes import head_matrix

if TYPE_CHECKING:
    from fedkt.data.federation import ClientData

KNOWLEDGE: Registry["Knowledge"] = Registry("knowledge")

Rows = torch.Tensor | None  # transfer-set row indices of a round (None: every row)


def _eval_batches(
    model: torch.nn.Module, x: torch.Tensor, fn, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    return predict(model, x, fn, batch_size)


def _check_array(array: np.ndarray, rows: int, cols: int | None, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 2 or arr.shape[0] != rows or (cols is not None and arr.shape[1] != cols):
        want = f"({rows}, {cols if cols is not None else 'K'})"
        raise KnowledgeError(f"{what} have shape {arr.shape}, expected {want}", "shape")
    if not np.issubdtype(arr.dtype, np.floating):
        raise KnowledgeError(f"{what} have dtype {arr.dtype}, expected a float type", "dtype")
    if not np.isfinite(arr).all():
        raise KnowledgeError(f"{what} contain NaN or infinite values", "non_finite")
    return arr


class Knowledge:
    """Base class: ``extract`` runs on the client, ``validate`` on the server."""

    domain = "transfer"
    space = "probs"

    def inputs(self, data: ClientData, rows: Rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The samples knowledge is extracted on and distilled on, with their labels
        (None where unlabelled): the round's transfer rows, or private data for
        per-class knowledge."""
        if self.domain == "class":
            return data.train_x, data.train_y
        x, y = data.transfer_x, data.transfer_y
        if rows is None:
            return x, y
        return x[rows], (y[rows] if y is not None else None)

    def spread(self, target: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """One target row per sample of :meth:`inputs`: per-class targets are looked up
        by each private sample's label; transfer targets already have one row per sample."""
        if self.domain == "class":
            assert labels is not None
            return target[labels]
        return target

    def extract(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, num_classes: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, per-row counts or None)."""
        raise NotImplementedError

    def validate(
        self, values: np.ndarray, counts: np.ndarray | None, rows: int, num_classes: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


class _TransferKnowledge(Knowledge):
    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = positive("temperature", temperature)


@KNOWLEDGE.register("soft_labels")
class SoftLabels(_TransferKnowledge):
    """p_n(x) = softmax(z_n(x) / T) on every transfer sample, float32 (M, C)."""

    space = "probs"

    def extract(self, model, x, y, num_classes):
        probs = _eval_batches(
            model, x, lambda xb: torch.softmax(model(xb).float() / self.temperature, dim=-1)
        )
        return probs.numpy().astype(np.float32), None

    def validate(self, values, counts, rows, num_classes):
        """Reject anything but an (M, C) array of finite probabilities summing to 1."""
        arr = _check_array(values, rows, num_classes, "soft labels")
        if arr.min() < 0.0 or arr.max() > 1.0 + 1e-4:
            raise KnowledgeError("soft labels contain values outside [0, 1]", "range")
        if not np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
            raise KnowledgeError("soft labels do not sum to one per sample", "normalisation")
        return arr.astype(np.float32, copy=False), None


@KNOWLEDGE.register("logits")
class Logits(_TransferKnowledge):
    """Raw class scores z_n(x) on every transfer sample (FedMD's "class scores", FedDF)."""

    space = "logits"
    max_abs = 1e4

    def extract(self, model, x, y, num_classes):
        return _eval_batches(model, x, model).numpy().astype(np.float32), None

    def validate(self, values, counts, rows, num_classes):
        arr = _check_array(values, rows, num_classes, "logits")
        if np.abs(arr).max(initial=0.0) > self.max_abs:
            raise KnowledgeError(f"logits exceed {self.max_abs:g} in magnitude", "magnitude")
        return arr.astype(np.float32, copy=False), None


#: Rows per float64 block in :func:`_per_class_mean`.
_SUM_ROWS = 1024


def _per_class_mean(
    values: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    counts = torch.bincount(y, minlength=num_classes).double()
    sums = torch.zeros(num_classes, values.shape[1], dtype=torch.float64)
    # Summed in float64 a block of rows at a time: a float64 copy of every row at once was
    # the largest transient of a FedProto client call (8,000 embeddings of 512: 33 MB).
    # Rows are added in the same order either way, so the sums are the same bits.
    for start in range(0, len(values), _SUM_ROWS):
        block = slice(start, start + _SUM_ROWS)
        sums.index_add_(0, y[block], values[block].double())
    means = torch.where(
        counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], torch.zeros_like(sums)
    )
    return means.float().numpy(), counts.numpy().astype(np.float64)


def _validate_counts(counts: np.ndarray | None, num_classes: int) -> np.ndarray:
    if counts is None:
        raise KnowledgeError("per-class knowledge needs per-class counts", "counts")
    c = np.asarray(counts)
    if (
        c.shape != (num_classes,)
        or not np.isfinite(c).all()
        or (c < 0).any()
        or not np.allclose(c, np.round(c))
    ):
        raise KnowledgeError(
            f"per-class counts must be {num_classes} non-negative integers", "counts"
        )
    if c.sum() <= 0:
        raise KnowledgeError("per-class counts are all zero", "counts")
    return c.astype(np.float64)


@KNOWLEDGE.register("class_logits")
class ClassLogits(Knowledge):
    """FD (Jeong et al. 2018): per-class mean logits over private data, (C, C) + counts."""

    domain, space = "class", "logits"

    def extract(self, model, x, y, num_classes):
        return _per_class_mean(_eval_batches(model, x, model), y, num_classes)

    def validate(self, values, counts, rows, num_classes):
        return _check_array(values, num_classes, num_classes, "class logits").astype(
            np.float32
        ), _validate_counts(counts, num_classes)


@KNOWLEDGE.register("prototypes")
class Prototypes(Knowledge):
    """FedProto (Tan et al.): per-class mean embeddings, (C, D) + counts."""

    domain, space = "class", "embedding"

    def extract(self, model, x, y, num_classes):
        return _per_class_mean(_eval_batches(model, x, model.embed), y, num_classes)

    def validate(self, values, counts, rows, num_classes):
        return _check_array(values, num_classes, None, "prototypes").astype(
            np.float32
        ), _validate_counts(counts, num_classes)


@KNOWLEDGE.register("heads")
class Heads(Knowledge):
    """FedGen (Zhu et al.): the client's linear head as a (C, D + 1) array (weight, bias
    column) + its per-class sample counts. Per-class rows, but of weights: only a fusion
    that reads heads takes it."""

    domain, space = "class", "head"

    def extract(self, model, x, y, num_classes):
        counts = torch.bincount(y, minlength=num_classes).double().numpy()
        return head_matrix(model.head).astype(np.float32), counts

    def validate(self, values, counts, rows, num_classes):
        return _check_array(values, num_classes, None, "heads").astype(
            np.float32
        ), _validate_counts(counts, num_classes)
