"""FedKD (fedkt/methods/fedkd.py): the SVD compression's rank and round trip by hand, the
energy it keeps, the adaptive mutual losses by hand, the energy schedule, and the client's
hidden-state map kept with its state but never sent; updates (changes from a base) in
place of weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tiny
import torch

from fedkt.config import load_config
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.transfer.compression import (
    SEP,
    UPDATE_MARK,
    SVDCodec,
    compress,
    decompress,
    rank_for_energy,
)
from fedkt.transfer.mutual import adaptive_mutual_losses


@pytest.mark.parametrize("energy, rank", [(0.6, 1), (0.9, 2), (13 / 14, 2), (0.93, 3), (1.0, 3)])
def test_rank_for_energy_by_hand(energy, rank):
    # squared singular values 9, 4, 1 of 14: rank 1 keeps 9/14 = 0.643, rank 2 13/14 = 0.929
    assert rank_for_energy(np.array([3.0, 2.0, 1.0]), energy) == rank


def test_a_zero_matrix_keeps_every_singular_value():
    assert rank_for_energy(np.zeros(4), 0.9) == 4


def test_a_low_rank_matrix_travels_as_its_factors_and_comes_back():
    a = np.outer(np.arange(1.0, 9.0), np.arange(1.0, 11.0)).astype(np.float32)  # rank 1, 8 x 10
    state = {"w": a, "b": np.ones(8, np.float32), "steps": np.array(3, np.int64)}
    record = compress(state, energy=0.95)
    assert record[f"w{SEP}u"].shape == (8, 1) and record[f"w{SEP}vt"].shape == (1, 10)
    assert record[f"w{SEP}s"].shape == (1,) and record[f"w{SEP}shape"].tolist() == [8, 10]
    assert record["b"] is state["b"] and record["steps"] is state["steps"]  # sent as they are
    back = decompress(record)
    assert list(back) == ["w", "b", "steps"] and back["w"].dtype == np.float32
    np.testing.assert_allclose(back["w"], a, rtol=1e-5)


def test_a_convolution_is_compressed_as_one_matrix_and_keeps_its_shape():
    rng = np.random.default_rng(0)
    low = (rng.normal(size=(16, 2)) @ rng.normal(size=(2, 27))).reshape(16, 3, 3, 3)
    record = compress({"conv": low.astype(np.float32)}, energy=0.99)
    assert record[f"conv{SEP}u"].shape == (16, 2)
    assert decompress(record)["conv"].shape == (16, 3, 3, 3)


def test_what_factors_would_not_shrink_is_sent_whole():
    full_rank = np.eye(3, dtype=np.float32)  # rank 3: 3 * (3 + 3 + 1) > 9
    assert list(compress({"w": full_rank}, 0.5)) == ["w"]


def test_the_energy_kept_bounds_the_error():
    a = np.random.default_rng(1).normal(size=(40, 30))
    for energy in (0.5, 0.9, 0.99):
        back = decompress(compress({"w": a}, energy))["w"]
        assert np.sum((a - back) ** 2) <= (1 - energy) * np.sum(a**2) + 1e-9


@pytest.mark.parametrize(
    "record, message",
    [
        ({f"w{SEP}s": np.ones(1), f"w{SEP}vt": np.ones((1, 3))}, "factors without 'u'"),
        ({f"w{SEP}u": np.ones((2, 1)), f"w{SEP}s": np.ones(1)}, "weight 'w': unusable"),
        ({f"w{SEP}q": np.ones(1)}, "unknown factor"),
    ],
)
def test_factors_that_do_not_fit_are_refused(record, message):
    with pytest.raises(ValueError, match=message):
        decompress(record)


def test_adaptive_mutual_losses_by_hand():
    # p_t = (1/2, 1/2), p_s = (3/4, 1/4), label 0; hidden states (1, 2) and (0, 0): MSE 2.5
    t, s = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    ce_t, ce_s = math.log(2.0), -math.log(0.75)
    w = 1 / (ce_t + ce_s)
    kl_s_t = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl_t_s = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    loss_t, loss_s = adaptive_mutual_losses(
        t, s, torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    )
    assert float(loss_t) == pytest.approx(ce_t + w * (kl_s_t + 2.5), rel=1e-6)
    assert float(loss_s) == pytest.approx(ce_s + w * (kl_t_s + 2.5), rel=1e-6)


def test_each_side_of_the_pair_gets_its_own_gradient():
    g = torch.Generator().manual_seed(0)
    zt, zs, ht, hs = (torch.randn(5, 4, generator=g, requires_grad=True) for _ in range(4))
    y = torch.tensor([0, 1, 2, 3, 0])
    sum(adaptive_mutual_losses(zt, zs, ht, hs, y)).backward()
    own = [v.detach().clone().requires_grad_() for v in (zt, ht)]
    adaptive_mutual_losses(own[0], zs.detach(), own[1], hs.detach(), y)[0].backward()
    assert torch.allclose(zt.grad, own[0].grad) and torch.allclose(ht.grad, own[1].grad)


def test_the_energy_rises_from_t_start_to_t_end():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedkd", "rounds=10"]))
    energies = [exp.method.energy(exp, r) for r in (1, 6, 10)]
    assert energies == pytest.approx([0.95, 0.965, 0.977])
    assert exp.method.weight_codec(exp, 1).energy == 0.95


def test_the_hidden_map_is_kept_with_the_client_and_never_sent():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedkd"]))
    learner = Learner(exp, 0)
    assert exp.evaluates == "teacher" and set(learner.extras) == {"hidden_map"}
    before = learner.extras["hidden_map"].weight.detach().clone()
    metrics = learner.train(1)
    assert metrics["train_steps"] > 0 and "teach_steps" not in metrics
    assert not torch.equal(before, learner.extras["hidden_map"].weight)  # it learns
    state = learner.state_dict()
    assert "extra.hidden_map.weight" in state
    assert not any(k.startswith("extra.") for k in learner.shared_weights(1, None))
    again = Learner(exp, 0, state)
    assert torch.equal(again.extras["hidden_map"].weight, learner.extras["hidden_map"].weight)
    assert all(torch.equal(v, state[k]) for k, v in again.model.state_dict().items())


@pytest.mark.parametrize("bad", ["strategy.params.T_start=0", "strategy.params.T_end=1.5"])
def test_bad_energies_are_refused(bad):
    from fedkt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"must be a number in \(0, 1\]"):
        resolve(load_config(None, [*tiny.TINY, "strategy=fedkd", bad]))


def test_weights_that_diverged_are_refused_in_one_line():
    with pytest.raises(ValueError, match="weight 'w' holds NaN"):
        compress({"w": np.full((4, 4), np.nan)}, 0.9)


def test_the_pair_trains_under_a_gradient_clip():
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedkd", "strategy.params.clip_norm=0"]))
    assert exp.params["clip_norm"] is None  # 0: no clipping
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedkd"]))
    assert exp.params["clip_norm"] == 10.0
    # one plain SGD step at lr 1 on a huge loss moves the pair's weights by exactly the clip
    from fedkt.config import TrainConfig
    from fedkt.training import train_mutual

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = torch.cat([p.detach().flatten().clone() for p in (*a.parameters(), *b.parameters())])
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1.0, momentum=0.0)
    x, y = torch.ones(4, 3), torch.zeros(4, dtype=torch.int64)
    big = lambda m, p, xb, yb: 1000 * (m(xb).sum() + p(xb).sum())  # noqa: E731
    train_mutual(a, b, x, y, cfg, torch.Generator(), big, steps=1, clip_norm=0.5)
    after = torch.cat([p.detach().flatten() for p in (*a.parameters(), *b.parameters())])
    assert float((after - before).norm()) == pytest.approx(0.5, rel=1e-4)


def test_the_hidden_terms_weight():
    g = torch.Generator().manual_seed(3)
    zt, zs, ht, hs = (torch.randn(5, 4, generator=g) for _ in range(4))
    y = torch.tensor([0, 1, 2, 3, 0])
    with_h = adaptive_mutual_losses(zt, zs, ht, hs, y)
    without = adaptive_mutual_losses(zt, zs, ht, hs, y, hidden_weight=0.0)
    w = 1 / float(
        torch.nn.functional.cross_entropy(zt, y) + torch.nn.functional.cross_entropy(zs, y)
    )
    mse = float(((ht - hs) ** 2).mean())
    for a, b in zip(with_h, without):
        assert float(a - b) == pytest.approx(w * mse, rel=1e-5)


def test_an_update_travels_as_the_factors_of_its_change():
    """Full-rank weights whose change is of rank 1: the change's one factor travels, the
    receiver adds it to its base; what is sent whole is the value itself, bit for bit."""
    rng = np.random.default_rng(2)
    u, _, vt = np.linalg.svd(rng.normal(size=(20, 30)), full_matrices=False)
    w = (u * 0.7 ** np.arange(20)) @ vt  # singular values 1, 0.7, 0.49, ...
    base = {"w": w.astype(np.float32), "b": np.ones(20, np.float32)}
    change = np.outer(np.linspace(1, 2, 20), np.linspace(-1, 1, 30)) * 1e-2
    state = {"w": (base["w"] + change).astype(np.float32), "b": np.full(20, 0.3, np.float32)}
    as_weights = compress(state, 0.95)
    assert as_weights[f"w{SEP}u"].shape[1] > 1 and UPDATE_MARK not in as_weights
    record = compress(state, 0.95, base)
    assert record[f"w{SEP}u"].shape == (20, 1) and UPDATE_MARK in record
    assert record["b"] is state["b"]  # sent whole: the value, not base + (value - base)
    back = decompress(record, base)
    assert list(back) == ["w", "b"] and back["w"].dtype == np.float32
    np.testing.assert_allclose(back["w"], state["w"], atol=1e-6)
    # the same energy kept of the change loses far less of the model than of the weights
    err_update = np.abs(back["w"] - state["w"]).max()
    err_weights = np.abs(decompress(as_weights)["w"] - state["w"]).max()
    assert err_update < err_weights / 100


@pytest.mark.parametrize(
    "base, message",
    [
        (None, "holds updates, and no base"),
        ({"v": np.zeros((8, 10))}, "weight 'w': unusable factors .*no base weights"),
        ({"w": np.zeros((10, 8))}, r"base has shape \(10, 8\)"),
    ],
)
def test_an_update_without_its_base_is_refused(base, message):
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(8, 10))
    record = compress({"w": w0 + np.outer(np.ones(8), np.ones(10))}, 0.9, {"w": w0})
    with pytest.raises(ValueError, match=message):
        decompress(record, base)


def test_the_codec_sends_updates_only_when_asked():
    base = {"w": np.zeros((6, 6), np.float32)}
    state = {"w": np.outer(np.ones(6), np.arange(6.0)).astype(np.float32)}
    assert UPDATE_MARK in SVDCodec(0.9, updates=True).encode(state, base)
    assert UPDATE_MARK not in SVDCodec(0.9).encode(state, base)
    assert UPDATE_MARK not in SVDCodec(0.9, updates=True).encode(state)  # nothing to start from
    exp = resolve(load_config(None, [*tiny.TINY, "strategy=fedkd"]))
    assert exp.params["compress"] == "weights" and not exp.method.weight_codec(exp, 1).updates
    exp = resolve(
        load_config(None, [*tiny.TINY, "strategy=fedkd", "strategy.params.compress=updates"])
    )
    assert exp.method.weight_codec(exp, 1).updates


def test_an_unknown_compression_is_refused_in_one_line():
    from fedkt.errors import ConfigError

    with pytest.raises(ConfigError, match="compress must be one of weights, updates"):
        resolve(load_config(None, [*tiny.TINY, "strategy=fedkd", "strategy.params.compress=grads"]))
