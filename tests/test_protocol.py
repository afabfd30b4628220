"""The round protocol every knowledge strategy runs: the private-data anchor, the point
at which a round is scored, optimiser-step budgets, FedMD's digest-then-revisit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.results import client_steps
from fedkt.training import Fit, train_supervised

SMALL = ["num_clients=4", "transfer.size=40", "train.epochs=1", "distill.epochs=1",
         "evaluation.client_test_size=30", "evaluation.global_test_size=40"]  # fmt: skip


def _exp(*overrides: str):
    return resolve(load_config(None, [*SMALL, *overrides]))


def test_anchor_is_on_by_default_except_where_a_paper_has_its_own():
    assert _exp("strategy=fkd").method.anchor_weight(_exp("strategy=fkd")) == 1.0
    for name in ("knfu", "dsfl", "fkd"):
        exp = _exp(f"strategy={name}")
        assert exp.method.anchor_weight(exp) == 1.0
    for name in ("fd", "fedproto", "fedmd"):  # CE is already in their loss, or in FedMD's revisit
        exp = _exp(f"strategy={name}")
        assert exp.method.anchor_weight(exp) == 0.0
    exp = _exp("strategy=fkd", "distill.ce_weight=0")  # pure KL stays available
    assert exp.method.anchor_weight(exp) == 0.0


def test_fit_counts_steps_and_takes_an_exact_budget():
    exp = _exp("strategy=local", "train.batch_size=7")
    lr = Learner(exp, 0)
    n = len(lr.data.train_x)
    fit = train_supervised(
        lr.model, lr.data.train_x, lr.data.train_y, exp.config.train, lr.generator("t", 1)
    )
    assert isinstance(fit, Fit) and fit.steps == math.ceil(n / 7) and math.isfinite(fit.loss)
    budget = 3 * math.ceil(n / 7) + 2  # crosses pass boundaries
    fit = train_supervised(
        lr.model,
        lr.data.train_x,
        lr.data.train_y,
        exp.config.train,
        lr.generator("t", 2),
        steps=budget,
    )
    assert fit.steps == budget
    assert train_supervised(lr.model, lr.data.train_x[:0], lr.data.train_y[:0], exp.config.train,
                            lr.generator("t", 3), steps=5).steps == 0  # fmt: skip


def test_drop_last_skips_a_short_final_batch_and_nothing_else():
    """23 rows in batches of 10: two steps a pass with drop_last (rows of the same
    permutation as without it), three without; 7 rows: one batch of all 7 either way."""
    from fedkt.training import _batches

    kept = list(_batches(23, 10, torch.Generator().manual_seed(3)))
    gen = torch.Generator().manual_seed(3)
    dropped = list(_batches(23, 10, gen, drop_last=True))
    assert [len(b) for b in kept] == [10, 10, 3] and [len(b) for b in dropped] == [10, 10]
    assert all(torch.equal(a, b) for a, b in zip(kept, dropped))
    after = torch.Generator().manual_seed(3)
    torch.randperm(23, generator=after)
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=after))
    assert [len(b) for b in _batches(7, 10, torch.Generator(), drop_last=True)] == [7]

    exp = _exp("strategy=local", "train.batch_size=7", "train.drop_last=true")
    lr = Learner(exp, 0)
    n = len(lr.data.train_x)
    assert n % 7, "the test needs a short final batch"
    fit = train_supervised(
        lr.model, lr.data.train_x, lr.data.train_y, exp.config.train, lr.generator("t", 1)
    )
    assert fit.steps == n // 7
    assert _exp("strategy=local").config.train.drop_last is False  # PyTorch's default


def test_an_equal_budget_is_spent_by_every_strategy():
    """Under distill.steps every client spends exactly that many steps in its exchange
    phase: distilling, or (nothing to distil) training locally."""
    local = Learner(_exp("strategy=local", "distill.steps=9"), 1)
    metrics = local.train(1)
    assert metrics["exchange_steps"] == 9 and metrics["train_steps"] > 0
    assert client_steps(metrics) == metrics["train_steps"] + 9
    fkd = Learner(_exp("strategy=fkd", "distill.steps=9"), 1)
    assert "exchange_steps" not in fkd.train(1)  # it distils instead
    target = np.full((40, 10), 0.1, dtype=np.float32)
    assert fkd.finetune(target, 1)["exchange_steps"] == 9
    fd = Learner(_exp("strategy=fd", "distill.steps=9"), 2)
    assert fd.finetune(np.full((10, 10), 0.0, dtype=np.float32), 1)["exchange_steps"] == 9
    md = Learner(_exp("strategy=fedmd", "distill.steps=9"), 2)
    out = md.finetune(np.zeros((20, 10), dtype=np.float32), 1)  # digest 4 steps + revisit 5
    assert out["exchange_steps"] == 9 and math.isfinite(out["revisit_loss"])


def test_fedmd_digests_then_revisits_before_it_is_scored():
    exp = _exp("strategy=fedmd", "train.epochs=1", "strategy.params.revisit_epochs=2")
    lr = Learner(exp, 0)
    lr.train(1)
    before = [p.detach().clone() for p in lr.model.parameters()]
    out = lr.finetune(np.zeros((20, 10), dtype=np.float32), 1)
    n, bs = len(lr.data.train_x), exp.config.train.batch_size
    digest = math.ceil(20 / exp.config.distill.batch_size)
    assert out["exchange_steps"] == digest + 2 * math.ceil(n / bs)  # revisit: 2 epochs of CE
    assert "revisit_loss" in out
    assert any(not torch.equal(a, b) for a, b in zip(before, lr.model.parameters()))


def test_fedmd_resamples_a_subset_of_a_larger_pool_each_round():
    exp = _exp("strategy=fedmd")  # default: half of the 40-sample pool
    r1, r2 = exp.transfer_indices(1), exp.transfer_indices(2)
    assert len(r1) == len(r2) == 20 and not np.array_equal(r1, r2)
    assert np.array_equal(r1, _exp("strategy=fedmd").transfer_indices(1))  # every process agrees
    assert exp.knowledge_rows(1) == 20
    lr = Learner(exp, 3)
    assert lr.knowledge(1)[0].shape == (20, 10)
    with pytest.raises(ConfigError, match="subset: FedMD resamples a subset of the public pool"):
        _exp("strategy=fedmd", "strategy.params.subset=40")
    with pytest.raises(
        ConfigError, match="pretrain_epochs: pre-training on public data needs its labels"
    ):
        _exp("strategy=fedmd", "strategy.params.pretrain_epochs=1")


def test_fedmd_pretrains_on_labelled_public_data_once():
    exp = _exp("strategy=fedmd", "transfer.labelled=true", "strategy.params.pretrain_epochs=1")
    fresh = Learner(exp, 0)
    assert fresh.train(1)["pretrain_steps"] == math.ceil(40 / exp.config.train.batch_size)
    again = Learner(exp, 0, fresh.state_dict())  # a client with saved state is not fresh
    assert "pretrain_steps" not in again.train(2)
