"""FedTGP's server (fedkt/methods/fedtgp.py): the adaptive margin and the margin loss by hand,
trained prototypes that separate the classes, determinism, and a resume that continues."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkt.methods.fedtgp import TrainableGlobalPrototypes
from fedkt.transfer.prototypes import adaptive_margin, margin_loss


def test_adaptive_margin_by_hand():
    # class means Q_0 = (0, 0), Q_1 = (3, 4) (from two clients), Q_2 = (0, 1); nearest
    # neighbours: 0 -> 2 at 1, 1 -> 2 at sqrt(9 + 9) = 4.243, 2 -> 0 at 1: max 4.243
    values = np.array([[[0, 0], [2, 4], [0, 1]], [[0, 0], [4, 4], [9, 9]]], dtype=float)
    present = np.array([[True, True, True], [True, True, False]])
    assert adaptive_margin(values, present, cap=100.0) == pytest.approx(math.sqrt(18))
    assert adaptive_margin(values, present, cap=2.0) == 2.0
    assert adaptive_margin(values, present[:, :1], cap=100.0) == 0.0  # one class: no margin


def test_margin_loss_by_hand():
    protos = torch.tensor([[0.0, 0.0]])
    centres = torch.tensor([[0.0, 1.0], [3.0, 4.0]])  # distances 1 and 5
    # logits -(1 + 2), -5 for the true class 0 with margin 2: CE = log(1 + e^(-2))
    got = margin_loss(protos, torch.tensor([0]), centres, margin=2.0)
    assert float(got) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def _uploads(seed=0, clients=4, classes=3, dim=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    values = centres[None] + rng.normal(0, 0.3, (clients, classes, dim))
    counts = rng.integers(1, 20, (clients, classes)).astype(float)
    counts[0, 2] = 0  # client 0 has no class 2: its row is not an upload
    values[0, 2] = np.nan
    return values, counts, centres


def test_trained_prototypes_sit_nearest_their_own_class():
    values, counts, centres = _uploads()
    fusion = TrainableGlobalPrototypes(epochs=60, lr=0.05, batch_size=4, seed=1)
    result = fusion.fuse(values, counts)
    assert result.targets.shape == values.shape
    assert np.allclose(result.targets[0], result.targets[3])  # one set for everyone
    protos = result.targets[0]
    for c in range(3):
        d = np.linalg.norm(values[1:, c][:, None, :] - protos[None], axis=-1)
        assert (d.argmin(axis=1) == c).all()
    # client 0 uploaded 2 of the 11 prototypes
    assert np.allclose(result.weights[:, 0], 2 / 11) and np.allclose(result.weights.sum(1), 1)
    assert fusion.last_margin > 0


def test_same_seed_same_prototypes_and_a_resume_continues():
    values, counts, _ = _uploads()
    a = TrainableGlobalPrototypes(epochs=5, seed=3)
    b = TrainableGlobalPrototypes(epochs=5, seed=3)
    first = a.fuse(values, counts).targets
    assert np.array_equal(first, b.fuse(values, counts).targets)
    assert not np.array_equal(
        first, TrainableGlobalPrototypes(epochs=5, seed=4).fuse(values, counts).targets
    )
    second = a.fuse(values, counts).targets
    resumed = TrainableGlobalPrototypes(epochs=5, seed=3)
    resumed.load_state_dict(b.state_dict())  # b stopped after round 1
    assert np.array_equal(second, resumed.fuse(values, counts).targets)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0}, {"batch_size": 0}, {"margin_cap": -1}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        TrainableGlobalPrototypes(**bad)


def test_the_generator_survives_the_server_checkpoint(tmp_path):
    from fedkt.checkpoint import load_server, save_server

    values, counts, _ = _uploads()
    a, b = (TrainableGlobalPrototypes(epochs=2, seed=5) for _ in range(2))
    a.fuse(values, counts)
    save_server(tmp_path, 1, {"arrays": None, "strategy": {"fusion": a.state_dict()}})
    b.load_state_dict(load_server(tmp_path)["strategy"]["fusion"])
    assert np.array_equal(a.fuse(values, counts).targets, b.fuse(values, counts).targets)
