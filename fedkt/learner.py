"""One client's learning, independent of how it is reached (Flower simulation or a real
SuperNode): local training, knowledge extraction, fine-tuning on a fused target and
evaluation. The ClientApp only moves records in and out of a :class:`Learner`.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from fedkt.config import ExperimentConfig
from fedkt.data.federation import ClientData, federation_for
from fedkt.models import build_model
from fedkt.recipes import resolve_strategy
from fedkt.seeding import derive_seed, torch_generator
from fedkt.training import accuracy, distill, resolve_device, train_supervised


class Learner:
    """Client ``partition_id`` of the federation described by ``cfg``."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        partition_id: int,
        state: OrderedDict[str, torch.Tensor] | None = None,
        data_folder: str | None = None,
    ) -> None:
        if not 0 <= partition_id < cfg.num_clients:
            raise ValueError(f"partition id {partition_id} outside 0..{cfg.num_clients - 1}")
        self.cfg = cfg
        self.partition_id = partition_id
        self.strategy = resolve_strategy(cfg)
        fed = federation_for(cfg, data_folder)
        self.architecture = fed.architectures[partition_id]
        self.num_classes = fed.num_classes
        self.data: ClientData = fed.client_data(partition_id)
        self.device = resolve_device(cfg.device)
        # Same seed for a client across strategies: every strategy starts from the same model.
        self.model = build_model(
            self.architecture, fed.input_shape, fed.num_classes, seed=derive_seed(cfg.seed, "init", partition_id)
        ).to(self.device)
        if state is not None:
            self.model.load_state_dict(state)

    @property
    def num_examples(self) -> int:
        return len(self.data.train_y)

    def _generator(self, phase: str, server_round: int) -> torch.Generator:
        return torch_generator(self.cfg.seed, phase, self.partition_id, server_round)

    def train(self, server_round: int) -> dict[str, float]:
        """Local cross-entropy training on private data, then evaluation on own test split."""
        loss = train_supervised(
            self.model, self.data.train_x, self.data.train_y, self.cfg.train, self._generator("train", server_round)
        )
        return {"train_loss": loss, "local_accuracy": accuracy(self.model, self.data.test_x, self.data.test_y)}

    def knowledge(self) -> np.ndarray:
        """What this client shares under its strategy (e.g. soft labels on D_t)."""
        return self.strategy.make_knowledge().extract(self.model, self.data.transfer_x)

    def finetune(self, target: np.ndarray, server_round: int) -> float:
        """Distil the fused ``target`` into the model on the transfer set."""
        return distill(
            self.model,
            self.data.transfer_x,
            torch.from_numpy(np.asarray(target, dtype=np.float32)),
            self.strategy.make_loss(),
            self.cfg.distill,
            self._generator("distill", server_round),
            transfer_y=self.data.transfer_y,
            private=(self.data.train_x, self.data.train_y),
            optimizer=self.cfg.train.optimizer,
            momentum=self.cfg.train.momentum,
        )

    def evaluate(self) -> dict[str, float]:
        return {
            "accuracy": accuracy(self.model, self.data.test_x, self.data.test_y),
            "global_accuracy": accuracy(self.model, self.data.global_x, self.data.global_y),
        }

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((k, v.detach().cpu()) for k, v in self.model.state_dict().items())
