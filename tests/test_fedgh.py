"""FedGH (fedkt/methods/fedgh.py): the header as an array and back, one server step by hand,
which uploads train it, determinism, a resume that continues, a client that adopts the
header instead of distilling, and the config errors of a method without a loss."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch
from torch import nn

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.methods.fedgh import GlobalHead
from fedkt.transfer.prototypes import head_matrix, load_head


def test_a_head_as_an_array_and_back():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    m = head_matrix(a)
    assert m.shape == (2, 4)
    assert np.array_equal(m[:, :3], a.weight.detach().numpy())
    assert np.array_equal(m[:, 3], a.bias.detach().numpy())
    load_head(b, m)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize(
    "head, matrix, message",
    [
        (nn.Linear(3, 2), np.zeros((2, 3)), "shape"),
        (nn.Linear(3, 2), np.full((2, 4), np.nan), "NaN"),
        (nn.Sequential(nn.Linear(3, 2)), np.zeros((2, 4)), "not a linear layer"),
        (nn.Linear(3, 2, bias=False), np.zeros((2, 4)), "not a linear layer"),
    ],
)
def test_a_head_that_does_not_fit_is_refused(head, matrix, message):
    with pytest.raises(ValueError, match=message):
        load_head(head, matrix)


def test_one_server_step_by_hand():
    # one client, C = 2 classes, D = 1: prototypes x = 2 (class 0) and x = -1 (class 1).
    # The header starts at W = 0, b = 0, so p = (1/2, 1/2) for both; one batch holds both,
    # and the mean CE's gradients dW_c = mean over samples of (p_c - y_c) x are
    #   class 0: ((0.5 - 1) * 2 + (0.5 - 0) * -1) / 2 = -0.75
    #   class 1: ((0.5 - 0) * 2 + (0.5 - 1) * -1) / 2 = +0.75
    # and db_c = mean(p_c - y_c) = 0 for both classes.
    # SGD at lr 1: W = (0.75, -0.75), b = (0, 0).
    fusion = GlobalHead(epochs=1, lr=1.0, batch_size=10)
    fusion.load_state_dict({"head": np.zeros((2, 2)), "rounds": 0})
    result = fusion.fuse(np.array([[[2.0], [-1.0]]]), np.array([[3.0, 5.0]]))
    np.testing.assert_allclose(result.targets[0], [[0.75, 0.0], [-0.75, 0.0]], atol=1e-7)
    assert result.weights.tolist() == [[1.0]]


def _uploads(seed=0, clients=4, classes=3, dim=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    values = centres[None] + rng.normal(0, 0.3, (clients, classes, dim))
    counts = rng.integers(1, 20, (clients, classes)).astype(float)
    counts[0, 2] = 0  # client 0 holds no class 2: not an upload, however its row looks
    values[1, 1] = np.nan  # a missing row is not an upload either
    return values, counts


def test_the_header_learns_the_uploaded_classes_and_everyone_gets_it():
    values, counts = _uploads()
    result = GlobalHead(epochs=50, lr=0.05, batch_size=4, seed=1).fuse(values, counts)
    assert result.targets.shape == (4, 3, 6) and result.targets.dtype == np.float32
    assert all(np.array_equal(result.targets[0], t) for t in result.targets)
    w, b = result.targets[0][:, :-1], result.targets[0][:, -1]
    logits = values @ w.T + b
    ok = np.isfinite(values).all(axis=-1)
    assert (logits.argmax(-1)[ok] == np.broadcast_to(np.arange(3), (4, 3))[ok]).all()
    # uploads per client: 2, 2, 3, 3 of 10
    np.testing.assert_allclose(result.weights, np.tile([0.2, 0.2, 0.3, 0.3], (4, 1)))


def test_same_seed_same_header_and_a_resume_continues(tmp_path):
    from fedkt.checkpoint import load_server, save_server

    values, counts = _uploads()
    a, b = GlobalHead(epochs=3, seed=3), GlobalHead(epochs=3, seed=3)
    first = a.fuse(values, counts).targets
    assert np.array_equal(first, b.fuse(values, counts).targets)
    assert not np.array_equal(first, GlobalHead(epochs=3, seed=4).fuse(values, counts).targets)
    second = a.fuse(values, counts).targets
    assert not np.array_equal(first, second)  # the header keeps training across rounds
    save_server(tmp_path, 1, {"arrays": None, "strategy": {"fusion": b.state_dict()}})
    resumed = GlobalHead(epochs=3, seed=3)
    resumed.load_state_dict(load_server(tmp_path)["strategy"]["fusion"])
    assert np.array_equal(second, resumed.fuse(values, counts).targets)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0}, {"batch_size": 0}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        GlobalHead(**bad)


def test_a_client_adopts_the_header_and_distils_nothing():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedgh"]))
    assert exp.loss is None and not exp.method.distils_on_clients
    learner = Learner(exp, 0)
    learner.train(1)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    values, counts = learner.shared_knowledge(1)
    header = GlobalHead(epochs=2, seed=0).fuse(values[None], counts[None]).targets[0]
    metrics = learner.finetune(header, 1)
    assert metrics == {}
    assert np.array_equal(head_matrix(learner.model.head), header)
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    with pytest.raises(ValueError, match="shape"):
        learner.finetune(header[:, :-1], 1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("strategy.loss=kl", "strategy.loss: 'fedgh' clients adopt what the server sends"),
        ("strategy.loss_params.weight=2", "strategy.loss_params: 'fedgh' clients adopt"),
        ("strategy.fusion=class_mean", "strategy.fusion: the server step of 'fedgh' needs"),
        ("strategy.knowledge=class_logits", "strategy.knowledge: the server step of 'fedgh'"),
        ("strategy=fedproto", "strategy.fusion: 'global_head' returns a head, which clients"),
    ],
)
def test_its_parts_are_fixed_and_it_takes_no_loss(override, message):
    overrides = [*tiny.TINY, "strategy=fedgh", override, "strategy.fusion=global_head"]
    with pytest.raises(ConfigError, match=message):
        resolve(load_config(None, overrides if override == "strategy=fedproto" else overrides[:-1]))


def test_its_servers_parameters_can_be_set():
    exp = resolve(
        load_config(None, [*tiny.TINY, "strategy=fedgh", "strategy.fusion_params.lr=0.1"])
    )
    assert exp.fusion.lr == 0.1 and exp.fusion.epochs == 100


def test_an_exchange_budget_buys_local_steps_and_the_reply_keeps_their_count():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedgh", "distill.steps=7"]))
    learner = Learner(exp, 0)
    metrics = learner.train(1)
    assert metrics["exchange_steps"] == 7
    values, counts = learner.shared_knowledge(1)
    header = GlobalHead(epochs=1).fuse(values[None], counts[None]).targets[0]
    assert "exchange_steps" not in learner.finetune(header, 1)
