"""FedDF (Lin et al., 2020): FedAvg, then server-side ensemble distillation.

Clients start each round from the global model, train locally and send both their
weights and their logits on the transfer set. The server averages the weights and
distils the clients' mean logits, as soft labels, into that average on the transfer
set; the distilled model is the next global model, which every client adopts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fedkt.method import Method, register
from fedkt.seeding import torch_generator
from fedkt.training import distill

if TYPE_CHECKING:
    from torch import nn

    from fedkt.experiment import Experiment


class FedDF(Method):
    @property
    def distils_on_clients(self) -> bool:
        return False  # the server distils; clients adopt its model

    def server_step(
        self, exp: Experiment, model: nn.Module | None, targets: np.ndarray, server_round: int
    ) -> np.ndarray | None:
        assert model is not None, "FedDF shares weights: the server holds the averaged model"
        cfg = exp.config
        # Every row of the fused target is the same ensemble mean; distil it as soft labels.
        soft = torch.softmax(torch.from_numpy(targets[0]) / cfg.strategy.temperature, dim=-1)
        assert exp.loss is not None
        distill(
            model,
            exp.federation().transfer_tensors()[0],
            soft,
            exp.loss,
            cfg.distill,
            torch_generator(cfg.seed, "server-distill", server_round),
            optimizer=cfg.train.optimizer,
            momentum=cfg.train.momentum,
            amp=cfg.train.amp,
        )
        return None  # clients adopt the distilled global model instead of a target


register(
    "feddf",
    FedDF(
        description=(
            "FedDF (Lin et al.): FedAvg, then server-side distillation of the clients' mean "
            "logits "
            "into the global model"
        ),
        exchanges="model weights + logits on the transfer set",
        knowledge="logits",
        fusion="mean",
        loss="kl",
        shares_weights=True,
        fixed_parts=True,
    ),
)
