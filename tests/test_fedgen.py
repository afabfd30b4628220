"""FedGen (fedkt/methods/fedgen.py): heads as knowledge, the heads' ensemble and the packed
target by hand, a generator whose embeddings the ensemble classifies as their labels,
determinism and resume, and a client that adopts the head, keeps the pool and learns
from it."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch

from fedkt.config import load_config
from fedkt.errors import ConfigError, KnowledgeError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.methods.fedgen import GeneratorFusion
from fedkt.transfer.generator import ensemble_logits, pack, unpack
from fedkt.transfer.knowledge import Heads
from fedkt.transfer.prototypes import head_matrix


def test_a_head_and_its_counts_are_the_knowledge():
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.head = torch.nn.Linear(4, 3)
    values, counts = Heads().extract(model, None, torch.tensor([0, 2, 2, 2]), 3)
    assert np.array_equal(values, head_matrix(model.head)) and counts.tolist() == [1, 0, 3]
    with pytest.raises(KnowledgeError):
        Heads().validate(values[:2], counts, 3, 3)


def test_the_ensemble_of_heads_by_hand():
    # client 0: W = (1, 0), b = (0, 0); client 1: W = (0, 2), b = (1, 0); x = 3
    # logits (3, 0) and (1, 6); weights 1/4, 3/4: (0.75 + 0.75, 0 + 4.5) = (1.5, 4.5)
    heads = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [2.0, 0.0]]])
    got = ensemble_logits(heads, torch.tensor([0.25, 0.75]), torch.tensor([[3.0]]))
    assert torch.allclose(got, torch.tensor([[1.5, 4.5]]))


def test_the_packed_target_by_hand_and_what_cannot_be_one():
    head = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # C = 2, D = 2
    target = pack(head, np.array([[7.0, 8.0]]), np.array([1]))
    assert target.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 1]]
    h, x, y = unpack(target, 2, (1, 2))
    assert np.array_equal(h, head) and x.tolist() == [[7, 8]] and y.tolist() == [1]
    for bad in (target[:, :2], np.vstack([target[:2], [[7, 8, 2]]]), target * np.nan):
        with pytest.raises(ValueError):
            unpack(bad, 2, (1, 2))


def _heads(clients=3, classes=4, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (classes, dim)) * 3
    values = np.stack([np.hstack([w + rng.normal(0, 0.1, w.shape), np.zeros((classes, 1))])
                       for _ in range(clients)])  # fmt: skip
    counts = rng.integers(0, 30, (clients, classes)).astype(float)
    return values, counts


def test_the_generator_learns_what_the_heads_recognise():
    values, counts = _heads()
    result = GeneratorFusion(server_steps=200, pool_size=200, seed=1).fuse(values, counts)
    share = counts.sum(axis=1) / counts.sum()
    head, x, y = unpack(result.targets[0], 4, (200, 6))
    np.testing.assert_allclose(head, np.einsum("n,ncd->cd", share, values), rtol=1e-5)
    np.testing.assert_allclose(result.weights, np.tile(share, (3, 1)))
    assert all(np.array_equal(result.targets[0], t) for t in result.targets)
    logits = ensemble_logits(torch.tensor(values, dtype=torch.float32),
                             torch.tensor(share, dtype=torch.float32), torch.tensor(x))  # fmt: skip
    assert (logits.argmax(1).numpy() == y).mean() > 0.9
    prior = counts.sum(axis=0) / counts.sum()  # labels follow the uploaded distribution
    assert np.abs(np.bincount(y, minlength=4) / 200 - prior).max() < 0.1


def test_same_seed_same_target_and_a_resume_continues():
    values, counts = _heads()
    a, b = GeneratorFusion(server_steps=5, seed=2), GeneratorFusion(server_steps=5, seed=2)
    first = a.fuse(values, counts).targets
    assert np.array_equal(first, b.fuse(values, counts).targets)
    second = a.fuse(values, counts).targets
    resumed = GeneratorFusion(server_steps=5, seed=2)
    resumed.load_state_dict(b.state_dict())
    assert np.array_equal(second, resumed.fuse(values, counts).targets)


def test_a_client_adopts_the_head_keeps_the_pool_and_learns_from_it():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedgen"]))
    assert exp.loss is None and exp.parts["knowledge"] == "heads"
    learner = Learner(exp, 0)
    assert exp.method.local_training(exp, learner, learner.generator("t", 1), None) is None
    learner.train(1)
    values, counts = learner.shared_knowledge(1)
    target = exp.fusion.fuse(values[None], counts[None]).targets[0]
    assert learner.finetune(target, 1) == {}
    head, x, y = unpack(target, 10, (500, learner.model.embedding_dim))
    assert np.allclose(head_matrix(learner.model.head), head)
    again = Learner(exp, 0, learner.state_dict())  # the pool survives with the client's state
    assert torch.equal(again.extras["pool"].x, torch.as_tensor(x)) and bool(
        again.extras["pool"].filled
    )
    fit = exp.method.local_training(exp, again, again.generator("train", 2), None)
    assert fit is not None and fit.steps > 0


def test_students_are_refused():
    with pytest.raises(ConfigError, match="fedgen trains each client's own head"):
        resolve(load_config(None, [*tiny.TINY, "strategy=fedgen", "model.student=mlp"]))
