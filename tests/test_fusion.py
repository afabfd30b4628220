"""Fusion math on hand-computed examples (no Flower)."""

import math

import numpy as np
import pytest

from fedkt.errors import ConfigError
from fedkt.methods.knfu import estimated_distributions, kl_matrix, knfu_weights
from fedkt.transfer import FUSIONS

# Two clients, one transfer sample, two classes: A is confident in class 0, B in class 1.
A, B = [0.8, 0.2], [0.2, 0.8]
PROBS = np.array([[A], [B]])
KL_AB = 0.8 * math.log(0.8 / 0.2) + 0.2 * math.log(0.2 / 0.8)  # = 0.6 ln 4 = 0.83178


def test_kl_matrix_hand_computed():
    d = kl_matrix(np.array([A, B]))
    assert d[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert d[0, 1] == pytest.approx(KL_AB)
    assert d[1, 0] == pytest.approx(KL_AB)  # symmetric for this mirrored pair
    assert KL_AB == pytest.approx(0.831777, abs=1e-6)


def test_epd_is_mean_prediction():
    probs = np.array([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    np.testing.assert_allclose(estimated_distributions(probs), [[0.5, 0.5]])


def test_knfu_weights_and_target_hand_computed():
    # beta = 1: w_AA = 1 / (1 + e^-0.831777) = 1 / 1.435275 = 0.696730, w_AB = 0.303270
    fusion = FUSIONS.create("knfu", beta=1.0)
    res = fusion.fuse(PROBS, np.ones(2))
    np.testing.assert_allclose(res.weights, [[0.696730, 0.303270], [0.303270, 0.696730]], atol=1e-6)
    # target for A: 0.696730 * [0.8, 0.2] + 0.303270 * [0.2, 0.8] = [0.618038, 0.381962]
    np.testing.assert_allclose(res.targets[0, 0], [0.618038, 0.381962], atol=1e-6)
    np.testing.assert_allclose(res.targets[1, 0], [0.381962, 0.618038], atol=1e-6)


def test_knfu_beta_ten_nearly_ignores_distant_client():
    w = knfu_weights(PROBS, beta=10.0)
    assert w[0, 1] == pytest.approx(math.exp(-10 * KL_AB) / (1 + math.exp(-10 * KL_AB)))
    assert w[0, 1] < 3e-4


def test_knfu_threshold_topk_and_include_self():
    assert np.array_equal(knfu_weights(PROBS, beta=1.0, threshold=0.5), np.eye(2))
    assert np.array_equal(
        knfu_weights(PROBS, beta=1.0, include_self=False), np.array([[0.0, 1.0], [1.0, 0.0]])
    )
    three = np.array([[A], [A], [B]])
    w = knfu_weights(three, beta=1.0, top_k=2)
    np.testing.assert_allclose(w[0], [0.5, 0.5, 0.0])  # two identical neighbours, B dropped
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_knfu_beta_zero_equals_mean():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 5))
    np.testing.assert_allclose(
        FUSIONS.create("knfu", beta=0.0).fuse(probs, np.ones(3)).targets,
        FUSIONS.create("mean").fuse(probs, np.ones(3)).targets,
        atol=1e-6,
    )


def test_mean_fusion_uniform_and_weighted():
    res = FUSIONS.create("mean").fuse(PROBS, np.array([3, 1]))
    np.testing.assert_allclose(res.targets[:, 0], [[0.5, 0.5], [0.5, 0.5]])
    res = FUSIONS.create("mean", weighting="samples").fuse(PROBS, np.array([3, 1]))
    np.testing.assert_allclose(res.targets[0, 0], [0.65, 0.35])  # 0.75*A + 0.25*B
    np.testing.assert_allclose(res.weights, [[0.75, 0.25], [0.75, 0.25]])


def test_fused_targets_are_distributions():
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=(6, 50))
    for name in ("mean", "knfu"):
        t = FUSIONS.create(name).fuse(probs, np.arange(1, 7)).targets
        assert t.shape == probs.shape and t.dtype == np.float32
        np.testing.assert_allclose(t.sum(axis=-1), 1.0, atol=1e-5)


def test_bad_fusion_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="no parameter 'betta'"):
        FUSIONS.create("knfu", betta=3)
    with pytest.raises(ConfigError, match="threshold"):
        FUSIONS.create("knfu", threshold=2.0)
    with pytest.raises(ConfigError, match="unknown fusion 'nope'"):
        FUSIONS.create("nope")


def test_era_sharpens_the_mean():
    # mean of A and B = [0.5, 0.5] -> stays uniform; mean of A and A = [0.8, 0.2]
    res = FUSIONS.create("era", temperature=0.1).fuse(np.array([[A], [A]]), np.ones(2))
    e = np.exp([8.0, 2.0])  # softmax([0.8, 0.2] / 0.1)
    np.testing.assert_allclose(res.targets[0, 0], e / e.sum(), atol=1e-6)
    assert res.targets[0, 0, 0] > 0.99


def test_class_mean_excluding_receiver_hand_computed():
    # 3 clients, 2 classes, 1-d "logits". Client 2 holds no class-1 samples.
    values = np.array([[[1.0], [10.0]], [[3.0], [20.0]], [[5.0], [0.0]]])
    counts = np.array([[1, 1], [3, 1], [4, 0]])
    res = FUSIONS.create("class_mean", exclude_self=True).fuse(values, counts)
    # client 0, class 0: (3*3 + 4*5) / 7 = 29/7; class 1: only client 1 -> 20
    np.testing.assert_allclose(res.targets[0, :, 0], [29 / 7, 20.0], atol=1e-5)
    # client 1, class 1: only client 0 holds it -> 10; client 2, class 0: (1*1 + 3*3)/4 = 2.5
    assert res.targets[1, 1, 0] == pytest.approx(10.0)
    assert res.targets[2, 0, 0] == pytest.approx(2.5)
    # two clients where only one holds class 1: the other has no target for it
    res2 = FUSIONS.create("class_mean").fuse(values[:2], np.array([[1, 0], [3, 1]]))
    assert np.isnan(res2.targets[1, 1]).all() and not np.isnan(res2.targets[0, 1]).any()
    incl = FUSIONS.create("class_mean", exclude_self=False).fuse(values, counts)
    np.testing.assert_allclose(incl.targets[0, :, 0], [(1 + 9 + 20) / 8, 15.0], atol=1e-5)


def test_knfu_single_participant_learns_from_itself():
    for include_self in (True, False):
        res = FUSIONS.create("knfu", include_self=include_self).fuse(np.array([[A]]), np.ones(1))
        np.testing.assert_allclose(res.weights, [[1.0]])
        np.testing.assert_allclose(res.targets[0, 0], A, atol=1e-6)


def test_weighted_fusion_uses_sample_counts():
    res = FUSIONS.create("weighted").fuse(PROBS, np.array([3, 1]))
    np.testing.assert_allclose(res.targets[0, 0], [0.65, 0.35])


def test_kd_dp_picks_the_most_confident_teacher_per_sample():
    # sample 0: A (0.8) vs B (0.6) -> A; sample 1: A (0.5) vs B (0.9) -> B
    values = np.array([[[0.8, 0.2], [0.5, 0.5]], [[0.4, 0.6], [0.1, 0.9]]])
    res = FUSIONS.create("kd_dp").fuse(values, np.ones(2))
    np.testing.assert_allclose(res.targets[0], [[0.8, 0.2], [0.1, 0.9]])
    np.testing.assert_allclose(res.targets[1], res.targets[0])
    np.testing.assert_allclose(res.weights, [[0.5, 0.5], [0.5, 0.5]])


def test_dlf_hand_computed_geometric_compromise():
    # Two teachers mirror each other: by symmetry the weights are equal.
    res = FUSIONS.create("dlf").fuse(PROBS, np.ones(2))
    np.testing.assert_allclose(res.targets[0, 0], [0.5, 0.5], atol=1e-4)
    # A, A, B: minimising 2 KL(p || A) + KL(p || B) gives p ~ A^(2/3) B^(1/3), i.e.
    # p_0 / p_1 = (0.8 / 0.2)^(1/3) = 4^(1/3), p_0 = 0.613511;
    # reachable as a mixture (w_A = 0.6892).
    res = FUSIONS.create("dlf", iterations=200).fuse(np.array([[A], [A], [B]]), np.ones(3))
    r = 4 ** (1 / 3)
    np.testing.assert_allclose(res.targets[0, 0], [r / (1 + r), 1 / (1 + r)], atol=1e-3)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-9)


def test_sade_trusts_the_teacher_that_agrees_with_itself_across_views():
    # Rows 0-1: two samples; rows 2-3: their second views. Teacher 0 predicts the same on
    # both views (cosine agreement 1 at w = (1, 0), the maximum); teacher 1 flips its answer.
    stable = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.2, 0.8]])
    flip = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.8, 0.2]])
    res = FUSIONS.create("sade").fuse(np.stack([stable, flip]), np.ones(2))
    w0 = res.weights[0, 0]
    assert w0 > 0.9 and np.allclose(res.weights, res.weights[0])  # one global weight row
    np.testing.assert_allclose(res.targets[1], w0 * stable + (1 - w0) * flip, atol=1e-5)
    # Identical teachers: the gradient is zero by symmetry, the weights stay uniform.
    same = FUSIONS.create("sade").fuse(np.stack([stable, stable]), np.ones(2))
    np.testing.assert_allclose(same.weights, 0.5, atol=1e-12)
    with pytest.raises(ValueError, match="two views"):
        FUSIONS.create("sade").fuse(np.stack([stable[:3], flip[:3]]), np.ones(2))


def test_knfu_relative_divergence_by_hand():
    """knfu_rel: each receiver's KL divergences divided by their median, then softmax(-beta d)."""
    probs = np.array([[0.5, 0.5], [0.8, 0.2], [0.2, 0.8]])[:, None, :]  # one transfer sample each
    # Row 0: d01 = d02 = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.223144; median 0.223144 -> (0, 1, 1);
    # w = (1, e^-1, e^-1) / (1 + 2 e^-1) = (0.576117, 0.211942, 0.211942).
    # Row 1: d10 = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.192745, d12 = 0.6 ln 4 = 0.831777, median 0.512261
    # -> (0.376268, 0, 1.623732); w ∝ (0.686412, 1, 0.197164) -> (0.364424, 0.530903, 0.104675).
    w = knfu_weights(probs, beta=1.0, scale="median")
    np.testing.assert_allclose(w[0], [0.576117, 0.211942, 0.211942], atol=1e-6)
    np.testing.assert_allclose(w[1], [0.364424, 0.530903, 0.104675], atol=5e-6)
    raw = knfu_weights(probs, beta=10.0)  # the paper's beta on raw KL: mostly self
    assert raw[1, 1] > 0.87 and w[1, 1] < 0.54
    with pytest.raises(ConfigError, match="scale must be 'none' or 'median'"):
        FUSIONS.create("knfu", scale="max")


def test_fuse_round_takes_sample_counts_or_row_counts_as_the_server_receives_them():
    fusion = FUSIONS.create("mean", weighting="samples")
    by_samples = fusion.fuse_round([PROBS[0], PROBS[1]], [np.array([3.0]), np.array([1.0])])
    np.testing.assert_allclose(by_samples.targets, fusion.fuse(PROBS, np.array([3, 1])).targets)
    two_rows = np.concatenate([PROBS, PROBS[::-1]], axis=1)  # (clients, rows, classes)
    per_row = np.array([[3.0, 1.0], [1.0, 3.0]])
    by_row = fusion.fuse_round(list(two_rows), list(per_row))
    np.testing.assert_allclose(by_row.targets, fusion.fuse(two_rows, per_row).targets)
