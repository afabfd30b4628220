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

from fedkt.errors import ConfigError
from fedkt.method import Method, register
from fedkt.seeding import rng
from fedkt.training import train_supervised
from fedkt.transfer.losses import LOSSES, DistillationLoss, masked_mean, rows_with_target

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


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
    """FedMD's round [paper]: (optional, once) transfer learning on the labelled public
    data; each round, class scores on a public subset resampled from the pool, the
    consensus "digested" (MAE, no private-data anchor), then a "revisit" of the private
    data (CE, ``revisit_epochs``), and the model is scored after the revisit. Under an
    exchange budget (``distill.steps``) the digest and the revisit share it in halves."""

    def check_param(self, name: str, value: Any) -> Any:
        low = 0 if name in ("revisit_epochs", "pretrain_epochs") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        return value

    def validate(self, exp: Experiment) -> None:
        size = exp.config.transfer.size
        if self.subset(exp) >= size:
            raise ConfigError(
                f"strategy.params.subset: FedMD resamples a subset of the public pool each round; "
                f"{self.subset(exp)} is not smaller than transfer.size ({size})"
            )
        if exp.params["pretrain_epochs"] > 0 and not exp.config.transfer.labelled:
            raise ConfigError(
                "strategy.params.pretrain_epochs: pre-training on public data needs its labels; "
                "set transfer.labelled: true"
            )

    def subset(self, exp: Experiment) -> int:
        """Per-round subset size; by default half the public pool (the transfer set)."""
        given = exp.params["subset"]
        return exp.config.transfer.size // 2 if given is None else int(given)

    def anchor_weight(self, exp: Experiment) -> float:
        return 0.0  # [paper] the digest is pure MAE; the private data comes back in the revisit

    def transfer_indices(self, exp: Experiment, server_round: int) -> np.ndarray | None:
        t = exp.config.transfer
        return resampled_rows(exp.config.seed, t.size, self.subset(exp), t.views, server_round)

    def distill_steps(self, exp: Experiment) -> int | None:
        budget = exp.config.distill.steps
        return None if budget is None else budget // 2

    def prepare(self, exp: Experiment, learner: Learner, server_round: int) -> dict[str, float]:
        epochs = exp.params["pretrain_epochs"]
        if not learner.fresh or epochs == 0:
            return {}
        data = learner.data
        assert data.transfer_y is not None  # checked by validate
        cfg = exp.config.train.model_copy(update={"epochs": epochs})
        steps = 0
        for model in filter(None, (learner.model, learner.student)):
            fit = train_supervised(
                model,
                data.transfer_x,
                data.transfer_y,
                cfg,
                learner.generator("pretrain", server_round),
            )
            steps += fit.steps
        return {"pretrain_steps": float(steps)}

    def after_distillation(
        self, exp: Experiment, learner: Learner, server_round: int
    ) -> dict[str, float]:
        budget = exp.config.distill.steps
        epochs = exp.params["revisit_epochs"]
        if budget is None and epochs == 0:
            return {}
        cfg = exp.config.train.model_copy(update={"epochs": epochs})
        fit = train_supervised(
            learner.receiving_model,
            learner.data.train_x,
            learner.data.train_y,
            cfg,
            learner.generator("revisit", server_round),
            steps=None if budget is None else budget - budget // 2,
        )
        return {"revisit_loss": fit.loss, "exchange_steps": float(fit.steps)}


register(
    "fedmd",
    FedMD(
        description="FedMD (Li & Wang): consensus class scores on a public subset resampled each "
        "round, MAE digest, CE revisit of private data",
        exchanges="class scores on a resampled public subset (S x C floats)",
        knowledge="logits",
        fusion="mean",
        loss="mae",
        params={"subset": None, "revisit_epochs": 1, "pretrain_epochs": 0},
    ),
)
