"""FedGen (Zhu et al., ICML 2021, "Data-Free Knowledge Distillation for Heterogeneous
Federated Learning"), in HtFLlib's form for heterogeneous models: clients upload their
linear heads and per-class counts; the server trains a conditional *generator* of
embeddings so that the sample-weighted ensemble of the heads classifies a generated
embedding of class y as y, and averages the heads. Each client adopts the averaged head
and, in its next local training, adds CE(head(G(y)), y) on generated embeddings.

Defaults as HtFLlib's ``servergen.py`` (noise 512 uniform, hidden 512, Adam at 0.005, 100
steps on batches of 10 labels from the uploaded label distribution). fedkt differs [ours]:
the server sends a *pool* of ``pool_size`` generated embeddings with their labels, not the
generator (500 x (D + 1) floats against its ~300k weights), and a client draws its
generated batches from it; seeds from the experiment's; the generator in the server
checkpoint. Heads must be one linear layer on one embedding size; no students.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkt.errors import ConfigError
from fedkt.method import Method, register
from fedkt.seeding import derive_seed, torch_generator
from fedkt.training import Fit, train_supervised
from fedkt.transfer import fusion as fu
from fedkt.transfer import generator as gen
from fedkt.transfer.params import count, positive
from fedkt.transfer.prototypes import load_head

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


@fu.FUSIONS.register("generator")
class GeneratorFusion(fu.Fusion):
    """FedGen's server: a generator trained against the heads' ensemble, the heads
    averaged by sample count, and a pool of generated embeddings; every participant
    receives the same (C + P, D + 1) array (:func:`fedkt.transfer.generator.pack`)."""

    spaces, domains, targets_space = ("head",), ("class",), "head"

    def __init__(self, server_steps: int = 100, lr: float = 0.005, batch_size: int = 10,
                 noise_dim: int = 512, hidden_dim: int = 512, pool_size: int = 500,
                 seed: int = 0) -> None:  # fmt: skip
        self.steps, self.lr = count("server_steps", server_steps), positive("lr", lr)
        self.batch_size, self.pool_size = (
            count("batch_size", batch_size),
            count("pool_size", pool_size),
        )
        self.noise_dim, self.hidden_dim = (
            count("noise_dim", noise_dim),
            count("hidden_dim", hidden_dim),
        )
        self.seed, self.rounds = int(seed), 0
        self.net: gen.FeatureGenerator | None = None

    def _generator(self, classes: int, dim: int) -> gen.FeatureGenerator:
        if self.net is None or self.net.classes != classes or self.net.out.out_features != dim:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "gen-init") % 2**63)
                self.net = gen.FeatureGenerator(self.noise_dim, classes, self.hidden_dim, dim)
        return self.net

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> fu.FusionResult:
        values, counts = fu._check(values, counts)
        n, c, width = values.shape
        per_class = counts if counts.ndim == 2 else np.ones((n, c))
        share = per_class.sum(axis=1) / per_class.sum()
        heads = torch.as_tensor(values, dtype=torch.float32)
        w = torch.as_tensor(share, dtype=torch.float32)
        prior = torch.as_tensor(per_class.sum(axis=0) / per_class.sum(), dtype=torch.float32)
        net, g = self._generator(c, width - 1), torch_generator(self.seed, "gen-train", self.rounds)
        pool, y = gen.train_generator(
            net, heads, w, prior, self.steps, self.lr, self.batch_size, self.pool_size, g
        )
        self.rounds += 1
        head = np.einsum("n,ncd->cd", share, values)
        target = gen.pack(head, pool.numpy(), y.numpy())
        targets = np.broadcast_to(target, (n, *target.shape)).copy()
        return fu.FusionResult(targets=targets, weights=np.tile(share, (n, 1)))

    def state_dict(self) -> dict[str, Any]:
        if self.net is None:
            return {}
        return {**fu.module_arrays(self.net), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            c = int(np.asarray(state["net.body.0.weight"]).shape[1]) - self.noise_dim
            net = self._generator(c, int(np.asarray(state["net.out.weight"]).shape[0]))
            fu.load_module_arrays(net, state)
            self.rounds = int(state["rounds"])


class FedGen(Method):
    def validate(self, exp: Experiment) -> None:
        if any(s is not None for s in exp.students):
            raise ConfigError("model.student: fedgen trains each client's own head; no students")

    def client_modules(self, exp: Experiment, learner: Learner) -> dict[str, nn.Module]:
        assert isinstance(exp.fusion, GeneratorFusion)
        return {"pool": gen.GeneratedPool(exp.fusion.pool_size, learner.model.embedding_dim)}

    def receive(self, exp, learner, target, server_round):
        pool = learner.extras["pool"]
        head, features, labels = gen.unpack(target, exp.num_classes, tuple(pool.x.shape))
        load_head(learner.model.head, head)
        pool.x.copy_(torch.as_tensor(features))
        pool.y.copy_(torch.as_tensor(labels))
        pool.filled.fill_(True)
        return {}  # its exchange budget went to local training (train phase)

    def local_training(self, exp, learner, generator, steps) -> Fit | None:
        pool, model = learner.extras["pool"], learner.model
        if not bool(pool.filled):
            return None  # nothing received yet: plain local training
        draw = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

        def generated(idx: torch.Tensor) -> torch.Tensor:
            j = torch.randint(len(pool.y), (len(idx),), generator=draw)
            return F.cross_entropy(model.head(pool.x[j]), pool.y[j])

        data = learner.data
        cfg = exp.config.train
        return train_supervised(
            model, data.train_x, data.train_y, cfg, generator, steps=steps, extra=generated
        )


register(
    "fedgen",
    FedGen(
        description=(
            "FedGen (Zhu et al.): heads up; the server trains a generator of embeddings against "
            "their ensemble and averages them; clients adopt the head and learn from generated data"
        ),
        exchanges="head + counts up (C x (D+1) + C), averaged head + generated pool down",
        knowledge="heads",
        fusion="generator",
        fixed_parts=True,
        adopts_targets=True,
    ),
)
