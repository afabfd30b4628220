"""FD in its paper's single pass (fedkt/methods/fd_local.py): one optimiser step of
CE + weight * T^2 * KL(softmax(target of the label / T) || softmax(logits / T)) checked
against the loss computed by hand, a client that keeps the logits it was sent with its
state and trains with them from the next round, the fusion that leaves the receiver out,
and what does not fit refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tiny
import torch
import torch.nn.functional as F

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.training import train_supervised


def _exp(*extra):
    return resolve(load_config(None, [*tiny.TINY, "strategy=fd_local", *extra]))


def test_one_step_of_the_fd_objective_by_hand():
    """One full-batch SGD step at T = 2, weight 0.5: the row of class 2 has no target and
    adds only its cross-entropy; the others are pulled towards their class's soft target."""
    from fedkt.config import TrainConfig

    exp = _exp("strategy.params.weight=0.5", "strategy.params.temperature=2")
    learner = Learner(exp, 0)
    twin = copy.deepcopy(learner.model)
    x, y = learner.data.train_x[:4], torch.tensor([0, 1, 2, 0])
    table = torch.full((exp.num_classes, exp.num_classes), float("nan"))
    table[0], table[1] = (
        torch.linspace(-1.0, 2.0, exp.num_classes),
        torch.linspace(1.5, 0.0, exp.num_classes),
    )
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, momentum=0.0)
    one_batch = exp.method.objective(exp, learner, table)
    train_supervised(
        learner.model, x, y, cfg, torch.Generator().manual_seed(1), objective=one_batch
    )

    z = twin(x)
    soft = torch.softmax(table[[0, 1, 0]] / 2, dim=1)
    log_s = F.log_softmax(z[[0, 1, 3]] / 2, dim=1)
    kl = (soft * (soft.log() - log_s)).sum(dim=1).mean() * 4  # T^2, mean over rows with one
    by_hand = F.cross_entropy(z, y) + 0.5 * kl
    by_hand.backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(learner.model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_client_keeps_the_logits_and_trains_with_them_next_round():
    exp = _exp()
    assert exp.loss is None and exp.parts["knowledge"] == "class_logits"
    learner, other = Learner(exp, 0), Learner(exp, 1)
    assert exp.method.local_training(exp, learner, learner.generator("t", 1), None) is None
    learner.train(1)
    other.train(1)
    mine, theirs = learner.shared_knowledge(1), other.shared_knowledge(1)
    values = np.stack([mine[0], theirs[0]])
    counts = np.stack([mine[1], theirs[1]])
    target = exp.fusion.fuse(values, counts).targets[0]
    # the receiver is left out: client 0 gets client 1's mean logits where client 1 holds
    # the class, and no target (NaN) where it does not
    held = counts[1] > 0
    assert np.allclose(target[held], theirs[0][held], atol=1e-6)
    assert np.isnan(target[~held]).all()
    assert learner.finetune(target, 1) == {}  # nothing distilled in the exchange phase
    again = Learner(exp, 0, learner.state_dict())  # the logits survive with the state
    kept = again.extras["logits"]
    assert bool(kept.filled)
    assert torch.equal(kept.value.nan_to_num(-1), torch.as_tensor(target).nan_to_num(-1))
    with_logits = exp.method.local_training(exp, again, again.generator("train", 2), None)
    assert with_logits is not None and with_logits.steps > 0
    # weight 0 leaves the cross-entropy alone: the same steps as plain local training
    plain = _exp("strategy.params.weight=0")
    a, b = Learner(plain, 0, learner.state_dict()), Learner(plain, 0, learner.state_dict())
    fit = plain.method.local_training(plain, a, a.generator("train", 2), None)
    ce = train_supervised(
        b.model, b.data.train_x, b.data.train_y, plain.config.train, b.generator("train", 2)
    )
    assert fit is not None and fit.loss == ce.loss != with_logits.loss
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_what_does_not_fit_is_refused():
    exp = _exp()
    learner = Learner(exp, 0)
    with pytest.raises(ValueError, match="logits of shape"):
        exp.method.receive(exp, learner, np.zeros((3, 2), np.float32), 1)
    with pytest.raises(ConfigError, match="fd_local regularises .* no students"):
        _exp("model.student=mlp")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        _exp("strategy.params.temperature=0")
    with pytest.raises(ConfigError, match="weight must be a number >= 0"):
        _exp("strategy.params.weight=-1")
