"""Tuning reads validation data held out of the clients' training data, never the test
split, and the test seeds run with the values it chose."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from tiny import in_order

from fedkt.compare import load_compare, run_compare
from fedkt.config import load_config
from fedkt.data import federation as fed_mod
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.results import ResultsWriter
from fedkt.rounds import RoundRecord

SMALL = ["num_clients=4", "transfer.size=40", "evaluation.global_test_size=50"]


def test_validation_split_never_reads_the_test_split(monkeypatch):
    real = fed_mod.dataset_of

    def poisoned(cfg, folder=None):  # a dataset whose test split is all NaN
        ds = real(cfg, folder)
        return dataclasses.replace(ds, test_x=np.full_like(ds.test_x, np.nan, dtype=np.float64))

    monkeypatch.setattr(fed_mod, "dataset_of", poisoned)
    plain = fed_mod.build_federation(load_config(None, SMALL))
    held = fed_mod.build_federation(load_config(None, [*SMALL, "evaluation.split=validation"]))
    assert torch.isnan(
        plain.client_data(0).test_x
    ).all()  # the poison is where the test split is read
    ds = held.dataset
    for i in range(4):
        train, val = set(held.client_idx[i].tolist()), set(held.client_test_idx[i].tolist())
        assert not train & val and train | val == set(plain.client_idx[i].tolist())
        assert len(val) == round(0.2 * len(train | val))
        data = held.client_data(i)
        assert not torch.isnan(data.test_x).any() and not torch.isnan(data.global_x).any()
        assert torch.equal(data.test_x, ds.tensor(ds.train_x[held.client_test_idx[i]]))
    pooled = set(np.concatenate(held.client_test_idx).tolist())
    assert set(held.global_test_idx.tolist()) <= pooled


def _fake(calls: list):
    """A stand-in simulation: validation ALMA is best with distill.lr = 0.01."""

    def run(cfg, cdir):
        calls.append(cfg)
        writer = ResultsWriter(cdir, resolve(cfg))
        if cfg.evaluation.split == "validation":
            acc = 0.9 if cfg.distill.lr == 0.01 else 0.6
        else:
            acc = 0.8
        for r in (1, 2):
            rows = [
                {"client": i, "accuracy": acc, "local_accuracy": acc}
                for i in range(cfg.num_clients)
            ]
            writer.add_round(RoundRecord(round=r), rows)
        return writer.finish(1.0)

    return run


def test_tuning_chooses_on_validation_and_runs_test_seeds_with_the_choice(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        """
name: tuned
set: [rounds=2, num_clients=3]
strategies: [local, fkd]
seeds: [0, 1]
tune:
  seeds: [100]
  grid:
    fkd: {distill.lr: [0.05, 0.01]}
    "*": {train.lr: [0.05]}
"""
    )
    comp, cells = load_compare(path)
    calls: list = []
    logged: list[str] = []
    run_compare(comp, cells, tmp_path / "out", in_order(_fake(calls)), log=logged.append)
    assert "tuning: 3 trials run, 0 reused; 4 cells run, 0 already finished" in logged
    tuning, testing = calls[:3], calls[3:]  # local: 1 combination, fkd: 2
    assert all(c.evaluation.split == "validation" and c.seed == 100 for c in tuning)
    assert all(c.evaluation.split == "test" and c.seed in (0, 1) for c in testing)
    assert {c.distill.lr for c in testing if c.strategy.name == "fkd"} == {0.01}
    record = json.loads((tmp_path / "out" / "tuning.json").read_text())
    fkd = next(r for r in record if r["strategy"] == "fkd")
    assert fkd["chosen"] == {"distill.lr": 0.01, "train.lr": 0.05} and fkd[
        "validation_alma"
    ] == pytest.approx(0.9)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Tuned values" in report
    # the runner-up is shown, so a choice won by a hair on few tuning seeds reads as one
    chosen, runner_up = "distill.lr=0.01, train.lr=0.05", "distill.lr=0.05, train.lr=0.05"
    assert f"| fkd | dirichlet-alpha=0.5 | {chosen} | 90.0 | {runner_up}: 60.0 | 2 |" in report
    assert "| local | dirichlet-alpha=0.5 | train.lr=0.05 | 60.0 | - | 1 |" in report


def test_tuning_may_not_change_what_is_compared(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategies: [fkd]\ntune: {grid: {fkd: {partition.alpha: [0.1, 1.0]}}}\n")
    with pytest.raises(ConfigError, match="tuning may not change partition.alpha"):
        load_compare(path)
    path.write_text("strategies: [fkd]\ntune: {grid: {fkd: {strategy.fusion_params.betta: [1]}}}\n")
    with pytest.raises(ConfigError, match="no parameter 'betta'"):
        load_compare(path)


def test_tuning_trials_run_fault_free_unless_asked(tmp_path):
    """A defender tunes before knowing the attack: trials drop the cells' faults (so every
    attack setting of a robustness study shares them), unless ``under_faults`` is set."""
    path = tmp_path / "c.yaml"
    body = """
name: robust
set: [rounds=2, num_clients=5, faults.byzantine=0.2, faults.attack=flip]
strategies: [fkd]
seeds: [0]
tune:
  seeds: [100]
  grid: {fkd: {distill.lr: [0.05, 0.01]}}
"""
    path.write_text(body)
    comp, cells = load_compare(path)
    calls: list = []
    logged: list[str] = []
    run_compare(comp, cells, tmp_path / "out", in_order(_fake(calls)), log=logged.append)
    assert "tuning: 2 trials run, 0 reused; 1 cells run, 0 already finished" in logged
    tuning, testing = calls[:2], calls[2:]
    assert all(c.faults.byzantine == 0 and c.evaluation.split == "validation" for c in tuning)
    assert all(c.faults.byzantine == 0.2 and c.faults.attack == "flip" for c in testing)

    # Another attack, reusing the first folder: its trials are the same runs, copied.
    path.write_text(body.replace("attack=flip", "attack=scale"))
    comp, cells = load_compare(path)
    again: list = []
    run_compare(comp, cells, tmp_path / "out2", in_order(_fake(again)), log=lambda m: None,
                reuse=[tmp_path / "out"])  # fmt: skip
    assert [c.evaluation.split for c in again] == ["test"]

    path.write_text(body.replace("  seeds: [100]", "  seeds: [100]\n  under_faults: true"))
    comp, cells = load_compare(path)
    under: list = []
    run_compare(comp, cells, tmp_path / "out3", in_order(_fake(under)), log=lambda m: None)
    assert all(c.faults.byzantine == 0.2 for c in under)
