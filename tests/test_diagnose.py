"""simulations/diagnose_cell.py: the per-client replay that explains a collapse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny import load_script
from torch import nn

from fedkt.config import load_config

SMALL = ["num_clients=3", "transfer.size=40", "train.epochs=1", "distill.epochs=1",
         "evaluation.client_test_size=30", "evaluation.global_test_size=40"]  # fmt: skip


@pytest.fixture(scope="module")
def diagnose():
    return load_script("simulations/diagnose_cell.py")


def test_dead_units_by_hand(diagnose):
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(3, 2))
    x = torch.tensor([[1.0, 0.0], [0.5, 2.0]])  # unit 3 is -x1 - x2 < 0 on both: dead
    assert diagnose.dead_unit_share(model, x) == [pytest.approx(1 / 3, abs=1e-3)]
    conv = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        conv[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    assert diagnose.dead_unit_share(conv, torch.ones(3, 1, 2, 2)) == [0.5]  # channel 2 dead
    assert model.training  # the model's mode is restored


def test_entropy_by_hand(diagnose):
    import numpy as np

    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert diagnose.entropy(p) == pytest.approx(math.log(2) / 2)


def _cell(tmp_path: Path, *overrides: str) -> Path:
    cfg = load_config(None, [*SMALL, *overrides])
    (tmp_path / "config.yaml").write_text(cfg.to_json())  # JSON is YAML
    return tmp_path


def test_replay_prints_one_row_per_client_and_round(diagnose, tmp_path, capsys):
    cell = _cell(tmp_path, "strategy=fkd")
    assert diagnose.main([str(cell), "--rounds", "2", "--clients", "1"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["round"], r["client"]) for r in rows] == [(1, 1), (2, 1)]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["local_accuracy"] <= 1
        assert 0 <= r["target_entropy"] <= math.log(10) + 1e-6
        assert 0 < r["target_mass_on_own_classes"] <= 1 + 1e-6
        assert r["dead_units"] and all(0 <= d <= 1 for d in r["dead_units"])
        assert len(r["dead_units_after_training"]) == len(r["dead_units"])


def test_bad_input_is_one_line(diagnose, tmp_path, capsys):
    assert diagnose.main([str(tmp_path)]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    cell = _cell(tmp_path, "strategy=local")
    assert diagnose.main([str(cell)]) == 2
    err = capsys.readouterr().err.strip()
    assert "exchanges no knowledge" in err and len(err.splitlines()) == 1
