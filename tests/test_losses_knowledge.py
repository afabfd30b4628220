"""Distillation loss and knowledge extraction/validation on hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from fedkt.errors import KnowledgeError
from fedkt.transfer import KNOWLEDGE, LOSSES

# KL([0.8, 0.2] || [0.5, 0.5]) = 0.8 ln 1.6 + 0.2 ln 0.4
KL = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)


def test_kl_loss_hand_computed():
    student = torch.zeros(1, 2)  # softmax -> [0.5, 0.5] at any temperature
    target = torch.tensor([[0.8, 0.2]])
    assert LOSSES.create("kl")(student, target).item() == pytest.approx(KL, abs=1e-6)
    assert KL == pytest.approx(0.192745, abs=1e-6)
    # T = 2 multiplies by T^2 = 4
    assert LOSSES.create("kl", temperature=2.0)(student, target).item() == pytest.approx(4 * KL, abs=1e-6)


def test_kl_loss_zero_at_target_and_gradient_points_to_it():
    target = torch.softmax(torch.tensor([[2.0, -1.0, 0.5]]), dim=-1)
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    loss = LOSSES.create("kl")(logits, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    student = torch.zeros(1, 3, requires_grad=True)
    LOSSES.create("kl")(student, target).backward()
    assert student.grad[0].argmin() == 0  # descent raises the target's top class


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)] + 0 * self.w


def test_soft_labels_extract_temperature():
    logits = torch.tensor([[math.log(4.0), 0.0]] * 3)
    model = _Fixed(logits)
    p = KNOWLEDGE.create("soft_labels").extract(model, torch.zeros(3, 1))
    np.testing.assert_allclose(p, [[0.8, 0.2]] * 3, atol=1e-6)
    p2 = KNOWLEDGE.create("soft_labels", temperature=2.0).extract(model, torch.zeros(3, 1))
    np.testing.assert_allclose(p2, [[2 / 3, 1 / 3]] * 3, atol=1e-6)  # softmax([ln4, 0] / 2)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((3, 2), 0.5, dtype=np.float32)[:2], "shape"),
        (np.full((3, 2), 0.5, dtype=np.int64), "dtype"),
        (np.array([[0.5, 0.5], [np.nan, 0.5], [0.5, 0.5]], dtype=np.float32), "NaN"),
        (np.array([[1.5, -0.5], [0.5, 0.5], [0.5, 0.5]], dtype=np.float32), "outside"),
        (np.full((3, 2), 0.3, dtype=np.float32), "sum to one"),
    ],
)
def test_soft_label_validation_rejects(array, message):
    with pytest.raises(KnowledgeError, match=message):
        KNOWLEDGE.create("soft_labels").validate(array, 3, 2)


def test_soft_label_validation_accepts():
    ok = np.full((3, 2), 0.5, dtype=np.float32)
    assert KNOWLEDGE.create("soft_labels").validate(ok, 3, 2) is not None
