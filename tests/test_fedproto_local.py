"""FedProto in its paper's single pass (fedkt/methods/fedproto_local.py): one optimiser step
of CE + lambda * MSE to the label's prototype checked against the loss computed by hand, a
client that keeps the prototypes it was sent with its state and trains with them from the
next round, and what does not fit refused."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch
import torch.nn.functional as F

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.models import build_model
from fedkt.training import train_supervised


def _exp(*extra):
    return resolve(load_config(None, [*tiny.TINY, "strategy=fedproto_local", *extra]))


def test_one_step_of_the_prototype_objective_by_hand():
    """One full-batch SGD step on CE + w * MSE: the row of class 2 has no prototype and
    adds no MSE; the others pull the embedding towards their class's prototype."""
    from fedkt.config import TrainConfig
    from fedkt.methods.fedproto import PrototypeLoss

    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 3, seed=0)
    twin = build_model("mlp", (1, 8, 8), 3, seed=0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    protos = torch.randn(3, model.embedding_dim)
    protos[2] = float("nan")
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, momentum=0.0)
    loss = PrototypeLoss(0.5)

    def objective(xb, yb):
        h = model.embed(xb)
        return loss(model.head(h), protos[yb], yb, h)

    train_supervised(model, x, y, cfg, torch.Generator().manual_seed(1), objective=objective)
    h = twin.embed(x)
    rows = ((h[[0, 1, 3]] - protos[[0, 1, 0]]) ** 2).mean(dim=1)
    by_hand = F.cross_entropy(twin.head(h), y) + 0.5 * rows.mean()
    by_hand.backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_client_keeps_the_prototypes_and_trains_with_them_next_round():
    exp = _exp()
    assert exp.loss is None and exp.parts["knowledge"] == "prototypes"
    learner = Learner(exp, 0)
    assert exp.method.local_training(exp, learner, learner.generator("t", 1), None) is None
    learner.train(1)
    values, counts = learner.shared_knowledge(1)
    target = exp.fusion.fuse(values[None], counts[None]).targets[0]
    assert learner.finetune(target, 1) == {}  # nothing distilled in the exchange phase
    again = Learner(exp, 0, learner.state_dict())  # the prototypes survive with the state
    memory = again.extras["prototypes"]
    assert bool(memory.filled)
    assert torch.equal(memory.value.nan_to_num(-1), torch.as_tensor(target).nan_to_num(-1))
    with_protos = exp.method.local_training(exp, again, again.generator("train", 2), None)
    assert with_protos is not None and with_protos.steps > 0
    # weight 0 leaves the cross-entropy alone: the same steps as plain local training
    plain = _exp("strategy.params.weight=0")
    a, b = Learner(plain, 0, learner.state_dict()), Learner(plain, 0, learner.state_dict())
    fit = plain.method.local_training(plain, a, a.generator("train", 2), None)
    ce = train_supervised(
        b.model, b.data.train_x, b.data.train_y, plain.config.train, b.generator("train", 2)
    )
    assert fit is not None and fit.loss == ce.loss != with_protos.loss
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_what_does_not_fit_is_refused():
    exp = _exp()
    learner = Learner(exp, 0)
    with pytest.raises(ValueError, match="prototypes of shape"):
        exp.method.receive(exp, learner, np.zeros((3, 2), np.float32), 1)
    with pytest.raises(ConfigError, match="no students"):
        _exp("model.student=mlp")
    with pytest.raises(ConfigError, match="weight must be a number >= 0"):
        _exp("strategy.params.weight=-1")
