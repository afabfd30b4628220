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
from fedkt.faults import byzantine_clients, corrupt_knowledge
from fedkt.models import build_model
from fedkt.recipes import resolve_strategy, student_loss
from fedkt.seeding import derive_seed, rng, torch_generator
from fedkt.training import accuracy, distill, predict, resolve_device, train_supervised

STUDENT_PREFIX = "student."


def initial_model_seed(cfg: ExperimentConfig, architecture: str) -> int:
    """Every client of one architecture starts from the same weights, in every strategy
    (and FedAvg's global model starts from them too): a fair start for comparisons."""
    return derive_seed(cfg.seed, "init", architecture)


def transfer_rows(cfg: ExperimentConfig, subset: int | None, server_round: int) -> np.ndarray | None:
    """Transfer-set rows used in ``server_round`` (FedMD resamples them each round);
    with two views, the chosen samples' rows in both views. None: every row."""
    size = cfg.transfer.size
    if subset is None or subset >= size:
        return None
    rows = np.sort(rng(cfg.seed, "transfer-subset", server_round).choice(size, size=subset, replace=False))
    return np.concatenate([rows + v * size for v in range(cfg.transfer.views)])


class Learner:
    """Client ``partition_id`` of the federation described by ``cfg``.

    ``model`` is the client's own model, trained on private data. With a student
    (``model.student`` in the config) the client also holds ``student``, a lightweight
    model that learns from ``model`` (its teacher) on private data and from the fused
    knowledge; the config says whose knowledge is shared and whose accuracy is reported.
    """

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
        self.student_architecture = cfg.student_names()[partition_id]
        self.num_classes = fed.num_classes
        self.data: ClientData = fed.client_data(partition_id)
        self.device = resolve_device(cfg.device)
        self.model = self._build(self.architecture, fed)
        self.student = self._build(self.student_architecture, fed) if self.student_architecture else None
        self.byzantine = partition_id in byzantine_clients(cfg)
        if state is not None:
            self.load_state(state)

    @staticmethod
    def describe(cfg: ExperimentConfig, partition_id: int, data_folder: str | None = None) -> str:
        """What :attr:`description` will say, without building any model: the handshake
        of 10,000 nodes then costs a data-layout lookup per node, not two models each."""
        fed = federation_for(cfg, data_folder)
        if not 0 <= partition_id < cfg.num_clients:
            raise ValueError(f"partition id {partition_id} outside 0..{cfg.num_clients - 1}")
        student = cfg.student_names()[partition_id]
        return fed.architectures[partition_id] + (f">{student}" if student else "")

    def _build(self, architecture: str, fed) -> torch.nn.Module:
        return build_model(
            architecture, fed.input_shape, fed.num_classes, seed=initial_model_seed(self.cfg, architecture)
        ).to(self.device)

    @property
    def num_examples(self) -> int:
        return len(self.data.train_y)

    @property
    def description(self) -> str:
        """The client's architecture(s): "resnet8", or "resnet8>mlp" for teacher > student."""
        return self.architecture + (f">{self.student_architecture}" if self.student is not None else "")

    @property
    def shared_model(self) -> torch.nn.Module:
        """The model whose knowledge this client sends."""
        return self.student if self.student is not None and self.cfg.model.shares == "student" else self.model

    @property
    def receiving_model(self) -> torch.nn.Module:
        """The model the fused knowledge is distilled into (the student, when there is one)."""
        return self.student if self.student is not None else self.model

    @property
    def evaluated_model(self) -> torch.nn.Module:
        return self.student if self.student is not None and self.cfg.evaluated_model == "student" else self.model

    def load_state(self, state: OrderedDict[str, torch.Tensor]) -> None:
        """Adopt weights (own saved state, or a global model from the server). Keys of
        the student carry the ``student.`` prefix (see :meth:`state_dict`)."""
        own = OrderedDict((k, v) for k, v in state.items() if not k.startswith(STUDENT_PREFIX))
        self.model.load_state_dict(own)
        if self.student is not None:
            n = len(STUDENT_PREFIX)
            self.student.load_state_dict(OrderedDict((k[n:], v) for k, v in state.items() if k.startswith(STUDENT_PREFIX)))

    def _generator(self, phase: str, server_round: int) -> torch.Generator:
        return torch_generator(self.cfg.seed, phase, self.partition_id, server_round)

    def train(self, server_round: int, proximal_mu: float = 0.0) -> dict[str, float]:
        """Local cross-entropy training on private data (then, with a student, the
        teacher's lesson to the student); evaluation of the evaluated model on the
        client's own test split."""
        metrics = {"train_loss": train_supervised(
            self.model, self.data.train_x, self.data.train_y, self.cfg.train,
            self._generator("train", server_round), proximal_mu=proximal_mu,
        )}
        if self.student is not None:
            metrics["student_train_loss"] = self._teach_student(server_round)
        metrics["local_accuracy"] = accuracy(self.evaluated_model, self.data.test_x, self.data.test_y)
        return metrics

    def _teach_student(self, server_round: int) -> float:
        """Distil the teacher into the student on private data with ``model.student_loss``."""
        loss = student_loss(self.cfg)
        x, y = self.data.train_x, self.data.train_y
        teacher_out = predict(self.model, x)
        target = teacher_out if loss.expects == "logits" else torch.softmax(teacher_out / self.strategy.temperature, dim=-1)
        return distill(
            self.student, x, target, loss, self.cfg.distill, self._generator("teach", server_round),
            labels=y, optimizer=self.cfg.train.optimizer, momentum=self.cfg.train.momentum, amp=self.cfg.train.amp,
        )

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
            values, counts = k.extract(self.shared_model, self.data.train_x, self.data.train_y, self.num_classes)
        else:
            values, counts = k.extract(self.shared_model, self._transfer(server_round)[0], None, self.num_classes)
        if self.byzantine:
            values = corrupt_knowledge(values, k.space, self.cfg.faults, rng(self.cfg.seed, "attack", self.partition_id, server_round))
        return values, counts

    def finetune(self, target: np.ndarray, server_round: int) -> float:
        """Distil the fused ``target`` into the receiving model: on the transfer set (one
        target row per transfer sample) or on private data (one target row per class)."""
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
            self.receiving_model, x, t, loss, self.cfg.distill, self._generator("distill", server_round),
            labels=labels, private=(self.data.train_x, self.data.train_y),
            optimizer=self.cfg.train.optimizer, momentum=self.cfg.train.momentum, amp=self.cfg.train.amp,
        )

    def evaluate(self) -> dict[str, float]:
        """Accuracy of the evaluated model on the client's own test split (ALMA's terms)
        and on the global test subset; with a student, both models' own accuracy too."""
        out = {
            "accuracy": accuracy(self.evaluated_model, self.data.test_x, self.data.test_y),
            "global_accuracy": accuracy(self.evaluated_model, self.data.global_x, self.data.global_y),
        }
        if self.student is not None:
            out["teacher_accuracy"] = accuracy(self.model, self.data.test_x, self.data.test_y)
            out["student_accuracy"] = accuracy(self.student, self.data.test_x, self.data.test_y)
        return out

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """All of this client's weights on CPU: the model's, then the student's under
        ``student.`` (weight-averaging strategies never have a student)."""
        out = OrderedDict((k, v.detach().cpu()) for k, v in self.model.state_dict().items())
        if self.student is not None:
            out.update((STUDENT_PREFIX + k, v.detach().cpu()) for k, v in self.student.state_dict().items())
        return out
