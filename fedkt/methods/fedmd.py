"""FedMD (Li & Wang, 2019): consensus class scores on a public subset resampled each
round; clients "digest" the consensus (mean absolute error to the mean scores).

The transfer set plays the public data set; ``params.subset`` samples of it are drawn
afresh each round (seeded by the round, so every client and the server pick the same
rows). With a transfer set no larger than the subset, every row is used every round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedkt.method import Method, register
from fedkt.seeding import rng
from fedkt.transfer.losses import LOSSES, DistillationLoss, masked_mean, rows_with_target

if TYPE_CHECKING:
    from fedkt.experiment import Experiment


@LOSSES.register("mae")
class MAELoss(DistillationLoss):
    """FedMD's "digest": mean absolute error between student scores and the consensus."""

    expects = "logits"

    def __call__(self, logits, target, labels=None, features=None):
        mask = rows_with_target(target)
        t = torch.where(mask[:, None], target, logits.detach())
        return masked_mean((logits - t).abs().mean(dim=-1), mask)


def resampled_rows(
    seed: int, size: int, subset: int, views: int, server_round: int
) -> np.ndarray | None:
    """``subset`` of ``size`` transfer rows drawn afresh for ``server_round``, in every
    view (sorted); ``None`` when the subset covers the whole transfer set."""
    if subset >= size:
        return None
    rows = np.sort(
        rng(seed, "transfer-subset", server_round).choice(size, size=subset, replace=False)
    )
    return np.concatenate([rows + v * size for v in range(views)])


class FedMD(Method):
    def check_param(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return value

    def transfer_indices(self, exp: Experiment, server_round: int) -> np.ndarray | None:
        t = exp.config.transfer
        return resampled_rows(exp.config.seed, t.size, exp.params["subset"], t.views, server_round)


register(
    "fedmd",
    FedMD(
        description=(
            "FedMD (Li & Wang): consensus class scores on a public subset resampled each round, "
            "MAE digest + CE revisit"
        ),
        exchanges="class scores on a resampled transfer subset (S x C floats)",
        knowledge="logits",
        fusion="mean",
        loss="mae",
        params={"subset": 5000},
    ),
)
