"""Distillation loss and knowledge extraction/validation on hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from fedkt.errors import ConfigError, KnowledgeError
from fedkt.transfer import KNOWLEDGE, LOSSES
from fedkt.transfer.losses import estimated_label_weight

# KL([0.8, 0.2] || [0.5, 0.5]) = 0.8 ln 1.6 + 0.2 ln 0.4
KL = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)


def test_kl_loss_hand_computed():
    student = torch.zeros(1, 2)  # softmax -> [0.5, 0.5] at any temperature
    target = torch.tensor([[0.8, 0.2]])
    assert LOSSES.create("kl")(student, target).item() == pytest.approx(KL, abs=1e-6)
    assert KL == pytest.approx(0.192745, abs=1e-6)
    # T = 2 multiplies by T^2 = 4
    assert LOSSES.create("kl", temperature=2.0)(student, target).item() == pytest.approx(
        4 * KL, abs=1e-6
    )


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
    p, counts = KNOWLEDGE.create("soft_labels").extract(model, torch.zeros(3, 1), None, 2)
    np.testing.assert_allclose(p, [[0.8, 0.2]] * 3, atol=1e-6)
    assert counts is None
    p2, _ = KNOWLEDGE.create("soft_labels", temperature=2.0).extract(
        model, torch.zeros(3, 1), None, 2
    )
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
        KNOWLEDGE.create("soft_labels").validate(array, None, 3, 2)


def test_soft_label_validation_accepts():
    ok = np.full((3, 2), 0.5, dtype=np.float32)
    values, counts = KNOWLEDGE.create("soft_labels").validate(ok, None, 3, 2)
    assert values.shape == (3, 2) and counts is None


class _Embedder(torch.nn.Module):
    """embed(x) = x (2-d features), head = identity-like linear map to 2 classes."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def embed(self, x):
        return x

    def forward(self, x):
        return self.head(self.embed(x))


def test_class_knowledge_per_class_means_and_counts():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 2])
    for name in ("class_logits", "prototypes"):
        values, counts = KNOWLEDGE.create(name).extract(_Embedder(), x, y, 3)
        # class 0: mean of rows 0 and 1 = [2, 1]; class 1: absent (zeros); class 2: [0, 5]
        np.testing.assert_allclose(values[:, :2], [[2.0, 1.0], [0.0, 0.0], [0.0, 5.0]])
        np.testing.assert_allclose(counts, [2, 0, 1])
    k = KNOWLEDGE.create("class_logits")
    with pytest.raises(KnowledgeError, match="counts"):
        k.validate(np.zeros((3, 3), np.float32), np.array([1.0, -1.0, 0.0]), 3, 3)
    with pytest.raises(KnowledgeError, match="needs per-class counts"):
        k.validate(np.zeros((3, 3), np.float32), None, 3, 3)


def test_per_class_means_summed_in_blocks_are_the_one_shot_float64_sums_bit_for_bit():
    """The per-class sums run over blocks of rows (a float64 copy of all rows was a call's
    largest transient); the rows are added in the same order, so the bits do not move."""
    from fedkt.transfer import knowledge

    torch.manual_seed(0)
    n = 3 * knowledge._SUM_ROWS + 17  # four blocks, the last one short
    values = torch.randn(n, 6) * 100
    y = torch.randint(0, 4, (n,))
    means, counts = knowledge._per_class_mean(values, y, 5)
    sums = torch.zeros(5, 6, dtype=torch.float64).index_add_(0, y, values.double())
    c = torch.bincount(y, minlength=5).double()
    expected = torch.where(c[:, None] > 0, sums / c.clamp(min=1)[:, None], torch.zeros_like(sums))
    assert np.array_equal(means, expected.float().numpy())
    assert np.array_equal(counts, c.numpy())
    assert not means[4].any()  # a class nobody holds: zeros


def test_logits_validation_rejects_huge_values():
    with pytest.raises(KnowledgeError, match="magnitude"):
        KNOWLEDGE.create("logits").validate(np.full((2, 2), 1e6, np.float32), None, 2, 2)


def test_soft_ce_mae_ce_kl_proto_hand_computed():
    logits = torch.zeros(1, 2)
    target = torch.tensor([[0.8, 0.2]])
    # soft CE = -(0.8 ln 0.5 + 0.2 ln 0.5) = ln 2
    assert LOSSES.create("soft_ce")(logits, target).item() == pytest.approx(math.log(2), abs=1e-6)
    # MAE between logits [0, 0] and target scores [1, -3] = (1 + 3) / 2
    assert LOSSES.create("mae")(logits, torch.tensor([[1.0, -3.0]])).item() == pytest.approx(2.0)
    # CE(y=0) = ln 2; + 0.5 * KL = 0.5 * 0.192745
    val = LOSSES.create("ce_kl", weight=0.5)(logits, target, torch.tensor([0])).item()
    assert val == pytest.approx(math.log(2) + 0.5 * KL, abs=1e-6)
    # proto: CE = ln 2; MSE([1, 2], [0, 0]) = (1 + 4) / 2 = 2.5
    feats = torch.tensor([[1.0, 2.0]])
    val = LOSSES.create("proto", weight=1.0)(
        logits, torch.zeros(1, 2), torch.tensor([1]), feats
    ).item()
    assert val == pytest.approx(math.log(2) + 2.5, abs=1e-6)


def test_losses_skip_rows_without_target():
    logits = torch.zeros(2, 2)
    target = torch.tensor([[0.8, 0.2], [float("nan"), float("nan")]])
    assert LOSSES.create("kl")(logits, target).item() == pytest.approx(KL, abs=1e-6)
    only_ce = LOSSES.create("ce_kl")(
        logits, torch.full((2, 2), float("nan")), torch.tensor([0, 1])
    ).item()
    assert only_ce == pytest.approx(math.log(2), abs=1e-6)


def test_reverse_kl_bdkd_gt_weighted_hand_computed():
    student = torch.zeros(1, 2)  # p_s = [0.5, 0.5], H = ln 2
    target = torch.tensor([[0.8, 0.2]])
    # KL(p_s || t) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    rkl = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert LOSSES.create("reverse_kl")(student, target).item() == pytest.approx(rkl, abs=1e-6)
    # bdkd: w = sigmoid(H(s) - H(t)) = sigmoid(ln 2 - H([0.8, 0.2])) on reverse, 1 - w on forward
    h_t = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    w = 1 / (1 + math.exp(-(math.log(2) - h_t)))
    assert LOSSES.create("bdkd")(student, target).item() == pytest.approx(
        w * rkl + (1 - w) * KL, abs=1e-6
    )
    # gt_weighted, alpha 0.25: 0.25 * CE(y=1) + 0.75 * KL = 0.25 ln 2 + 0.75 KL
    val = LOSSES.create("gt_weighted", alpha=0.25)(student, target, torch.tensor([1])).item()
    assert val == pytest.approx(0.25 * math.log(2) + 0.75 * KL, abs=1e-6)


def test_tgeo_hand_computed():
    student = torch.zeros(1, 2)  # s = [0.5, 0.5]
    target = torch.tensor([[0.8, 0.2]])
    y = torch.tensor([0])  # g = [1, 0]
    # ||s - g|| = sqrt(0.5), ||t - g|| = sqrt(0.08); alpha = sigmoid(5 (0.707107 - 0.282843))
    alpha = 1 / (1 + math.exp(-5 * (math.sqrt(0.5) - math.sqrt(0.08))))
    expected = alpha * KL + (1 - alpha) * math.log(2)
    assert LOSSES.create("tgeo")(student, target, y).item() == pytest.approx(expected, abs=1e-6)


def test_gt_weighted_estimated_alpha_hand_computed():
    student = torch.zeros(2, 2)  # CE = ln 2 per row
    target = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    labels = torch.tensor([0, 0])
    # alpha = 1 - mean(0.8, 0.4) = 0.4
    assert estimated_label_weight(target, labels).item() == pytest.approx(0.4)
    kl = LOSSES.create("kl")(student, target).item()
    val = LOSSES.create("gt_weighted", alpha="auto")(student, target, labels).item()
    assert val == pytest.approx(0.4 * math.log(2) + 0.6 * kl, abs=1e-6)
    # rows without a target are left out of the estimate; none at all -> labels only
    nan = torch.tensor([[0.8, 0.2], [float("nan"), float("nan")]])
    assert estimated_label_weight(nan, labels).item() == pytest.approx(0.2)
    assert estimated_label_weight(torch.full((2, 2), float("nan")), labels).item() == 1.0
    with pytest.raises(ConfigError, match="'auto'"):
        LOSSES.create("gt_weighted", alpha="sometimes")
