"""One client's learning, independent of how it is reached (Flower simulation or a real
SuperNode): local training, knowledge extraction, distillation of a fused target,
adopting a global model, evaluation. The ClientApp only moves records in and out of a
:class:`Learner`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedkt.data.federation import ClientData
from fedkt.experiment import Experiment
from fedkt.faults import corrupt_knowledge, corrupt_weights
from fedkt.models import Classifier, build_model
from fedkt.seeding import derive_seed, rng, torch_generator
from fedkt.training import (
    Fit,
    accuracy,
    distill,
    predict,
    resolve_device,
    train_mutual,
    train_supervised,
)

STUDENT_PREFIX = "student."
EXTRA_PREFIX = "extra."  #: a method's own client modules (``Method.client_modules``)


def initial_model_seed(seed: int, architecture: str) -> int:
    """Every client of one architecture starts from the same weights, in every strategy
    (and FedAvg's global model starts from them too): a fair start for comparisons."""
    return derive_seed(seed, "init", architecture)


def initial_model(exp: Experiment) -> Classifier:
    """The server's averaged model before round 1 (a weight-sharing method): the initial
    weights every client's copy of :attr:`Experiment.shared_architecture` starts from."""
    arch = exp.shared_architecture
    return build_model(
        arch, exp.input_shape, exp.num_classes, seed=initial_model_seed(exp.config.seed, arch)
    )


class ModelPool:
    """Models reused across the clients a process serves, one per (role, architecture).

    A simulation worker or SuperNode serves many clients, one message at a time; each
    message loads that client's weights into the pooled module instead of building a new
    one (and its initial weights, for a client's first message, are kept from the one
    build). Per thread, so concurrent messages never share a module.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(
        self, exp: Experiment, role: str, architecture: str, device: torch.device
    ) -> tuple[Classifier, dict]:
        """(module, its initial state) for ``architecture`` in ``role`` ("model"/"student")."""
        cache: dict = self._local.__dict__.setdefault("models", {})
        key = (role, architecture, exp.input_shape, exp.num_classes, exp.config.seed, str(device))
        if key not in cache:
            model = build_model(
                architecture,
                exp.input_shape,
                exp.num_classes,
                seed=initial_model_seed(exp.config.seed, architecture),
            ).to(device)
            cache[key] = (model, {k: v.detach().clone() for k, v in model.state_dict().items()})
        return cache[key]


class Learner:
    """Client ``partition_id`` of experiment ``exp``.

    ``model`` is the client's own model, trained on private data. With a student
    (``model.student`` in the config) the client also holds ``student``, a lightweight
    model that learns from ``model`` (its teacher) on private data and from the fused
    knowledge; the config says whose knowledge is shared and whose accuracy is reported.
    ``pool``: reuse a process's modules (the ClientApp does); without it, the learner
    builds its own.
    """

    def __init__(
        self,
        exp: Experiment,
        partition_id: int,
        state: OrderedDict[str, torch.Tensor] | None = None,
        data_folder: str | None = None,
        pool: ModelPool | None = None,
    ) -> None:
        cfg = exp.config
        if not 0 <= partition_id < cfg.num_clients:
            raise ValueError(f"partition id {partition_id} outside 0..{cfg.num_clients - 1}")
        self.exp = exp
        self.cfg = cfg
        self.partition_id = partition_id
        self.architecture = exp.architectures[partition_id]
        self.student_architecture = exp.students[partition_id]
        self.num_classes = exp.num_classes
        self.data: ClientData = exp.federation(data_folder).client_data(partition_id)
        self.device = resolve_device(cfg.device)
        self.pool = pool or ModelPool()
        self.model = self._model("model", self.architecture)
        self.student = (
            self._model("student", self.student_architecture) if self.student_architecture else None
        )
        self.extras = {
            name: module.to(self.device)
            for name, module in exp.method.client_modules(exp, self).items()
        }  #: the method's own modules, kept across rounds like the models (never sent)
        self.byzantine = partition_id in exp.attackers
        self.fresh = state is None  #: no saved state: this client's first round
        self.load_state(state)

    @staticmethod
    def describe(exp: Experiment, partition_id: int) -> str:
        """What :attr:`description` will say, without building any model: the handshake
        of 10,000 nodes then costs a lookup per node, not two models each."""
        if not 0 <= partition_id < exp.config.num_clients:
            raise ValueError(f"partition id {partition_id} outside 0..{exp.config.num_clients - 1}")
        student = exp.students[partition_id]
        return exp.architectures[partition_id] + (f">{student}" if student else "")

    def _model(self, role: str, architecture: str) -> Classifier:
        return self.pool.get(self.exp, role, architecture, self.device)[0]

    @property
    def num_examples(self) -> int:
        return len(self.data.train_y)

    @property
    def description(self) -> str:
        """The client's architecture(s): "resnet8", or "resnet8>mlp" for teacher > student."""
        return Learner.describe(self.exp, self.partition_id)

    @property
    def shared_model(self) -> Classifier:
        """The model whose knowledge this client sends."""
        return (
            self.student
            if self.student is not None and self.cfg.model.shares == "student"
            else self.model
        )

    @property
    def receiving_model(self) -> Classifier:
        """The model the fused knowledge is distilled into (the student, when there is one)."""
        return self.student if self.student is not None else self.model

    @property
    def evaluated_model(self) -> Classifier:
        return (
            self.student
            if self.student is not None and self.exp.evaluates == "student"
            else self.model
        )

    @property
    def averaged_model(self) -> Classifier:
        """The model whose weights the server averages (``Method.weights_of``)."""
        if self.exp.method.weights_of == "student":
            assert self.student is not None
            return self.student
        return self.model

    def load_state(self, state: OrderedDict[str, torch.Tensor] | None) -> None:
        """Adopt weights (own saved state, or a global model from the server); ``None``:
        the initial weights. Keys of the student carry the ``student.`` prefix (see
        :meth:`state_dict`)."""
        if state is None:
            self.model.load_state_dict(
                self.pool.get(self.exp, "model", self.architecture, self.device)[1]
            )
            if self.student is not None and self.student_architecture is not None:
                init = self.pool.get(self.exp, "student", self.student_architecture, self.device)[1]
                self.student.load_state_dict(init)
            return
        for name, module in self.extras.items():
            prefix = f"{EXTRA_PREFIX}{name}."
            module.load_state_dict(
                OrderedDict((k[len(prefix) :], v) for k, v in state.items() if k.startswith(prefix))
            )
        own = OrderedDict(
            (k, v)
            for k, v in state.items()
            if not k.startswith(STUDENT_PREFIX) and not k.startswith(EXTRA_PREFIX)
        )
        self.model.load_state_dict(own)
        if self.student is not None:
            n = len(STUDENT_PREFIX)
            self.student.load_state_dict(
                OrderedDict((k[n:], v) for k, v in state.items() if k.startswith(STUDENT_PREFIX))
            )

    def adopt(self, state: OrderedDict[str, torch.Tensor]) -> None:
        """Take the server's averaged weights into :attr:`averaged_model`."""
        if self.exp.method.weights_of == "student":
            assert self.student is not None
            self.student.load_state_dict(state)
        else:
            self.load_state(state)

    def generator(self, phase: str, server_round: int) -> torch.Generator:
        """The seeded generator of one phase of one round of this client."""
        return torch_generator(self.cfg.seed, phase, self.partition_id, server_round)

    def train(self, server_round: int, proximal_mu: float = 0.0) -> dict[str, float]:
        """Local cross-entropy training on private data (then, with a student, the
        teacher's lesson to the student); evaluation of the evaluated model on the
        client's own test split (``local_accuracy``: what local training alone gives).

        With an exchange budget (``distill.steps``), a client whose method distils
        nothing on the client spends that budget on more local training here, so every
        strategy takes the same optimiser steps per round."""
        method = self.exp.method
        metrics: dict[str, float] = dict(method.prepare(self.exp, self, server_round))
        fit, own = self._local_training(self.generator("train", server_round), proximal_mu)
        metrics.update(train_loss=fit.loss, train_steps=fit.steps)
        budget = self.cfg.distill.steps
        if budget is not None and not method.distils_on_clients:
            top_up, _ = self._local_training(
                self.generator("top-up", server_round), proximal_mu, budget
            )
            metrics["exchange_steps"] = top_up.steps
        if self.student is not None and not own:  # a method's own training taught it already
            teach = self._teach_student(server_round)
            metrics.update(student_train_loss=teach.loss, teach_steps=teach.steps)
        metrics["local_accuracy"] = accuracy(
            self.evaluated_model, self.data.test_x, self.data.test_y
        )
        return metrics

    def _local_training(
        self, generator: torch.Generator, proximal_mu: float, steps: int | None = None
    ) -> tuple[Fit, bool]:
        """The method's own local training (True) or cross-entropy on the model (False)."""
        fit = self.exp.method.local_training(self.exp, self, generator, steps)
        if fit is not None:
            return fit, True
        fit = train_supervised(
            self.model,
            self.data.train_x,
            self.data.train_y,
            self.cfg.train,
            generator,
            proximal_mu=proximal_mu,
            steps=steps,
        )
        return fit, False

    def train_pair(
        self,
        generator: torch.Generator,
        pair_loss: Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
        steps: int | None,
        also: nn.Module | None = None,
        clip_norm: float | None = None,
    ) -> Fit:
        """The model and the student learning together on private data (a method's
        ``local_training``: FML, FedKD), per :func:`fedkt.training.train_mutual`."""
        assert self.student is not None, "this client has no student"
        return train_mutual(
            self.model,
            self.student,
            self.data.train_x,
            self.data.train_y,
            self.cfg.train,
            generator,
            pair_loss,
            steps=steps,
            also=also,
            clip_norm=clip_norm,
        )

    def _teach_student(self, server_round: int) -> Fit:
        """Distil the teacher into the student on private data with ``model.student_loss``."""
        loss = self.exp.student_loss
        assert loss is not None and self.student is not None
        x, y = self.data.train_x, self.data.train_y
        teacher_out = predict(self.model, x)
        target = (
            teacher_out
            if loss.expects == "logits"
            else torch.softmax(teacher_out / self.exp.temperature, dim=-1)
        )
        return distill(
            self.student,
            x,
            target,
            loss,
            self.cfg.distill,
            self.generator("teach", server_round),
            labels=y,
            optimizer=self.cfg.train.optimizer,
            momentum=self.cfg.train.momentum,
            amp=self.cfg.train.amp,
        )

    def _rows(self, server_round: int) -> torch.Tensor | None:
        idx = self.exp.transfer_indices(server_round)
        return None if idx is None else torch.from_numpy(idx)

    def knowledge(self, server_round: int) -> tuple[np.ndarray, np.ndarray | None]:
        """What this client shares under its strategy: (values, per-row counts or None)."""
        k = self.exp.knowledge
        assert k is not None, "this strategy exchanges no knowledge"
        x, y = k.inputs(self.data, self._rows(server_round))
        values, counts = k.extract(
            self.shared_model, x, y if k.domain == "class" else None, self.num_classes
        )
        if self.byzantine:
            attack = rng(self.cfg.seed, "attack", self.partition_id, server_round)
            values = corrupt_knowledge(values, k.space, self.cfg.faults, attack)
        return values, counts

    def shared_knowledge(self, server_round: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`knowledge` with the counts the server fuses it by: the per-class counts,
        or (knowledge without them) this client's training-sample count, as the server
        takes it from the reply's metrics."""
        values, counts = self.knowledge(server_round)
        return values, (np.asarray([self.num_examples]) if counts is None else counts)

    def finetune(self, target: np.ndarray, server_round: int) -> dict[str, float]:
        """Distil the fused ``target`` into the receiving model, on the samples its
        knowledge is about (transfer rows, or private data for per-class knowledge), with
        the method's private-data anchor, then whatever the method does after distilling
        (FedMD's revisit). Returns ``distill_loss`` and ``exchange_steps``. A method that
        adopts its targets (FedGH's head) takes the target through its ``receive`` instead."""
        method = self.exp.method
        if method.adopts_targets:
            return dict(method.receive(self.exp, self, np.asarray(target), server_round))
        k, loss = self.exp.knowledge, self.exp.loss
        assert k is not None and loss is not None, "this strategy exchanges no knowledge"
        t = torch.from_numpy(np.asarray(target, dtype=np.float32))
        if k.space == "logits" and loss.expects == "probs":
            t = torch.softmax(t / self.exp.temperature, dim=-1)  # NaN rows stay NaN
        x, labels = k.inputs(self.data, self._rows(server_round))
        t = k.spread(t, labels)
        if len(t) != len(x):
            raise ValueError(f"target has {len(t)} rows for {len(x)} samples")
        fit = distill(
            self.receiving_model,
            x,
            t,
            loss,
            self.cfg.distill,
            self.generator("distill", server_round),
            labels=labels,
            private=(self.data.train_x, self.data.train_y),
            anchor_weight=method.anchor_weight(self.exp),
            steps=method.distill_steps(self.exp),
            optimizer=self.cfg.train.optimizer,
            momentum=self.cfg.train.momentum,
            amp=self.cfg.train.amp,
        )
        out = {"distill_loss": fit.loss, "exchange_steps": float(fit.steps)}
        for key, value in method.after_distillation(self.exp, self, server_round).items():
            out[key] = out.get(key, 0.0) + value if key == "exchange_steps" else value
        return out

    def evaluate(self) -> dict[str, float]:
        """Accuracy of the evaluated model on the client's own test split (ALMA's terms)
        and on the global test subset; with a student, both models' own accuracy too."""
        out = {
            "accuracy": accuracy(self.evaluated_model, self.data.test_x, self.data.test_y),
            "global_accuracy": accuracy(
                self.evaluated_model, self.data.global_x, self.data.global_y
            ),
        }
        if self.student is not None:
            out["teacher_accuracy"] = accuracy(self.model, self.data.test_x, self.data.test_y)
            out["student_accuracy"] = accuracy(self.student, self.data.test_x, self.data.test_y)
        return out

    def shared_weights(
        self, server_round: int, start: OrderedDict[str, torch.Tensor] | None
    ) -> OrderedDict[str, torch.Tensor]:
        """The weights this client sends: :attr:`averaged_model`'s, or for a Byzantine
        client its update from ``start`` (the model it was sent this round) corrupted per
        ``faults.attack`` (:func:`fedkt.faults.corrupt_weights`)."""
        state = OrderedDict(
            (k, v.detach().cpu().clone()) for k, v in self.averaged_model.state_dict().items()
        )
        if not self.byzantine or start is None:
            return state
        attack = rng(self.cfg.seed, "weight-attack", self.partition_id, server_round)
        hostile = corrupt_weights(
            {k: v.numpy() for k, v in state.items()},
            {k: v.detach().cpu().numpy() for k, v in start.items()},
            self.cfg.faults,
            attack,
        )
        return OrderedDict((k, torch.from_numpy(hostile[k])) for k in state)

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """All of this client's weights on CPU: the model's, then the student's under
        ``student.``, then the method's own modules under ``extra.<name>.`` (what the node
        keeps between rounds and checkpoints)."""
        out = OrderedDict((k, v.detach().cpu().clone()) for k, v in self.model.state_dict().items())
        if self.student is not None:
            out.update(
                (STUDENT_PREFIX + k, v.detach().cpu().clone())
                for k, v in self.student.state_dict().items()
            )
        for name, module in self.extras.items():
            out.update(
                (f"{EXTRA_PREFIX}{name}.{k}", v.detach().cpu().clone())
                for k, v in module.state_dict().items()
            )
        return out
