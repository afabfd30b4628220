"""One client's learning, independent of how it is reached (Flower simulation or a real
SuperNode): local training, knowledge extraction, distillation of a fused target,
adopting a global model, evaluation. The ClientApp only moves records in and out of a
:class:`Learner`.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from fedkt.config import ExperimentConfig
from fedkt.data.federation import ClientData, federation_for
from fedkt.models import build_model
from fedkt.recipes import resolve_strategy
from fedkt.seeding import derive_seed, rng, torch_generator
from fedkt.training import accuracy, distill, resolve_device, train_supervised


def initial_model_seed(cfg: ExperimentConfig, architecture: str) -> int:
    """Every client of one architecture starts from the same weights, in every strategy
    (and FedAvg's global model starts from them too): a fair start for comparisons."""
    return derive_seed(cfg.seed, "init", architecture)


def transfer_rows(cfg: ExperimentConfig, subset: int | None, server_round: int) -> np.ndarray | None:
    """Transfer-set rows used in ``server_round`` (FedMD resamples them each round)."""
    if subset is None or subset >= cfg.transfer.size:
        return None
    return np.sort(rng(cfg.seed, "transfer-subset", server_round).choice(cfg.transfer.size, size=subset, replace=False))


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
        self.model = build_model(
            self.architecture, fed.input_shape, fed.num_classes, seed=initial_model_seed(cfg, self.architecture)
        ).to(self.device)
        if state is not None:
            self.load_state(state)

    @property
    def num_examples(self) -> int:
        return len(self.data.train_y)

    def load_state(self, state: OrderedDict[str, torch.Tensor]) -> None:
        """Adopt weights (own saved state, or a global model from the server)."""
        self.model.load_state_dict(state)

    def _generator(self, phase: str, server_round: int) -> torch.Generator:
        return torch_generator(self.cfg.seed, phase, self.partition_id, server_round)

    def train(self, server_round: int, proximal_mu: float = 0.0) -> dict[str, float]:
        """Local cross-entropy training on private data, then evaluation on own test split."""
        loss = train_supervised(
            self.model, self.data.train_x, self.data.train_y, self.cfg.train,
            self._generator("train", server_round), proximal_mu=proximal_mu,
        )
        return {"train_loss": loss, "local_accuracy": accuracy(self.model, self.data.test_x, self.data.test_y)}

    def _transfer(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = transfer_rows(self.cfg, self.strategy.transfer_subset, server_round)
        x, y = self.data.transfer_x, self.data.transfer_y
        if rows is None:
            return x, y
        idx = torch.from_numpy(rows)
        return x[idx], (y[idx] if y is not None else None)

    def knowledge(self, server_round: int) -> tuple[np.ndarray, np.ndarray | None]:
        """What this client shares under its strategy: (values, per-row counts or None)."""
        k = self.strategy.make_knowledge()
        if k.domain == "class":
            return k.extract(self.model, self.data.train_x, self.data.train_y, self.num_classes)
        return k.extract(self.model, self._transfer(server_round)[0], None, self.num_classes)

    def finetune(self, target: np.ndarray, server_round: int) -> float:
        """Distil the fused ``target`` into the model: on the transfer set (one target row
        per transfer sample) or on private data (one target row per class)."""
        knowledge, loss = self.strategy.make_knowledge(), self.strategy.make_loss()
        t = torch.from_numpy(np.asarray(target, dtype=np.float32))
        if knowledge.space == "logits" and loss.expects == "probs":
            t = torch.softmax(t / self.strategy.temperature, dim=-1)  # NaN rows stay NaN
        if knowledge.domain == "class":
            x, labels = self.data.train_x, self.data.train_y
            t = t[labels]
        else:
            x, labels = self._transfer(server_round)
        if len(t) != len(x):
            raise ValueError(f"target has {len(t)} rows for {len(x)} samples")
        return distill(
            self.model, x, t, loss, self.cfg.distill, self._generator("distill", server_round),
            labels=labels, private=(self.data.train_x, self.data.train_y),
            optimizer=self.cfg.train.optimizer, momentum=self.cfg.train.momentum,
        )

    def evaluate(self) -> dict[str, float]:
        return {
            "accuracy": accuracy(self.model, self.data.test_x, self.data.test_y),
            "global_accuracy": accuracy(self.model, self.data.global_x, self.data.global_y),
        }

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((k, v.detach().cpu()) for k, v in self.model.state_dict().items())
