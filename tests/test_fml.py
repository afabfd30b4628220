"""FML (fedkt/methods/fml.py): the pair of mutual losses by hand, one backward pass giving
each model its own gradient, the pair's training equal to each model's own when the
mutual terms are off, and how a config resolves (the meme is every client's student)."""

from __future__ import annotations

import math

import pytest
import tiny
import torch
from torch import nn

from fedkt.config import TrainConfig, load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner, initial_model
from fedkt.training import train_mutual, train_supervised
from fedkt.transfer.mutual import mutual_losses


def test_mutual_losses_by_hand():
    # p_a = (1/2, 1/2), p_b = (3/4, 1/4), label 0; alpha = 0.5, beta = 0.25
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[math.log(3.0), 0.0]])
    kl_b_a = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl_a_b = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    loss_a, loss_b = mutual_losses(a, b, torch.tensor([0]), alpha=0.5, beta=0.25)
    assert float(loss_a) == pytest.approx(0.5 * math.log(2) + 0.5 * kl_b_a, rel=1e-6)
    assert float(loss_b) == pytest.approx(0.25 * -math.log(0.75) + 0.75 * kl_a_b, rel=1e-6)


def test_one_backward_pass_gives_each_model_its_own_gradient():
    a = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    b = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    sum(mutual_losses(a, b, y, 0.3, 0.6)).backward()
    own_a, own_b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    mutual_losses(own_a, b.detach(), y, 0.3, 0.6)[0].backward()
    mutual_losses(a.detach(), own_b, y, 0.3, 0.6)[1].backward()
    assert torch.allclose(a.grad, own_a.grad) and torch.allclose(b.grad, own_b.grad)


def test_without_the_mutual_terms_each_model_trains_as_it_would_alone():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(3))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, momentum=0.9)

    def models():
        torch.manual_seed(4)
        return nn.Linear(5, 3), nn.Linear(5, 3)

    a, b = models()
    fit = train_mutual(
        a,
        b,
        x,
        y,
        cfg,
        torch.Generator().manual_seed(5),
        lambda m, p, xb, yb: sum(mutual_losses(m(xb), p(xb), yb, 1.0, 1.0)),
    )
    alone_a, alone_b = models()
    for model in (alone_a, alone_b):
        train_supervised(model, x, y, cfg, torch.Generator().manual_seed(5))
    assert fit.steps == 8  # 2 passes of 4 batches: one step of the pair per batch
    for got, want in ((a, alone_a), (b, alone_b)):
        assert all(
            torch.allclose(p, q, atol=1e-6) for p, q in zip(got.parameters(), want.parameters())
        )
    steps = train_mutual(
        a, b, x, y, cfg, torch.Generator(), lambda m, p, xb, yb: m(xb).sum() * 0, steps=5
    ).steps
    assert steps == 5


def test_the_meme_is_every_clients_student_and_the_private_model_is_scored():
    tiers = "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]"
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fml", tiers]))
    assert exp.architectures == ("mlp", "mlp", "cnn-small", "cnn-small")
    assert exp.students == ("mlp",) * 4 and exp.evaluates == "teacher"
    assert exp.shared_architecture == "mlp" and exp.params == {"alpha": 0.5, "beta": 0.5}
    learner = Learner(exp, 2)
    assert learner.evaluated_model is learner.model and learner.averaged_model is learner.student
    metrics = learner.train(1)
    assert metrics["train_steps"] > 0 and "teach_steps" not in metrics  # no one-way lesson
    # what the client sends is its meme, and what it adopts goes into its meme only
    sent = learner.shared_weights(1, None)
    assert sent.keys() == learner.student.state_dict().keys()
    private = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.adopt(initial_model(exp).state_dict())
    assert all(
        torch.equal(v, initial_model(exp).state_dict()[k])
        for k, v in learner.student.state_dict().items()
    )
    assert all(torch.equal(private[k], v) for k, v in learner.model.state_dict().items())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy.params.alpha=1.5"], "alpha must be a number in [0, 1]"),
        (
            [
                "model.tiers=[{name: mlp, fraction: 0.5, student: mlp}, "
                "{name: mlp, fraction: 0.5, student: cnn-small}]"
            ],
            "model.student: strategy 'fml' averages the students' weights",
        ),
    ],
)
def test_bad_fml_configs_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve(load_config(None, [*tiny.TINY, "strategy=fml", *overrides]))
