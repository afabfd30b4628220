"""Small federations through Flower's real simulation engine (Ray), asserting on results."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedkt.provenance import kernel_identity
from fedkt.results import read_fusion_weights
from fedkt.server.simulation import simulate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_engine")]

C, M, N = 10, 200, 4  # classes, transfer samples, clients (see tiny_cfg)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def knfu_run(tmp_path_factory):
    from tiny import TINY

    from fedkt.config import load_config

    base = [
        *TINY,
        "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]",
    ]
    out = tmp_path_factory.mktemp("knfu")
    summary = simulate(load_config(None, base), str(out))
    return out, summary


def test_knfu_run_produces_complete_results(knfu_run):
    out, summary = knfu_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "rounds.jsonl",
        "summary.json",
        "accuracy.png",
        "fusion_weights.png",
        "fusion_weights.jsonl",
    ):
        assert (out / name).stat().st_size > 0, name
    for key in (
        "alma",
        "global_accuracy",
        "worst_client_accuracy",
        "rounds",
        "bytes_up",
        "bytes_down",
        "wall_seconds",
        "strategy",
        "seed",
    ):
        assert key in summary
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "knfu" and summary["rounds"] == 2
    # every client said in its handshake that it computes on this machine's kernels
    assert summary["kernels"] == kernel_identity("cpu")
    assert summary["architectures"] == [
        "mlp",
        "mlp",
        "cnn-small",
        "cnn-small",
    ]  # heterogeneous federation
    rows = _lines(out / "metrics.jsonl")
    assert len(rows) == 2 * N and {r["client"] for r in rows} == set(range(N))
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["global_accuracy"] <= 1.0
        assert np.isfinite(r["distill_loss"]) and np.isfinite(r["train_loss"])
    last = [r for r in rows if r["round"] == 2]
    assert summary["alma"] == pytest.approx(np.mean([r["accuracy"] for r in last]))
    assert summary["worst_client_accuracy"] == pytest.approx(min(r["accuracy"] for r in last))
    assert summary["alma"] > 0.3  # well above chance (0.1) after two short rounds


def test_bytes_are_measured_from_payloads(knfu_run):
    out, summary = knfu_run
    payload = N * M * C * 4  # float32 soft labels each way, per round
    for line in _lines(out / "rounds.jsonl"):
        assert payload < line["bytes_up"] < payload * 1.2
        assert payload < line["bytes_down"] < payload * 1.2
        assert line["participants"] == N and line["failed"] == 0


def test_fusion_weights_are_row_stochastic(knfu_run):
    out, _ = knfu_run
    weights = read_fusion_weights(out)
    assert sorted(weights) == [1, 2]
    clients, w = weights[2]
    assert clients == list(range(N)) and w.shape == (N, N)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_same_seed_same_metrics(tiny_cfg, tmp_path):
    a = simulate(tiny_cfg(), str(tmp_path / "a"))
    b = simulate(tiny_cfg(), str(tmp_path / "b"))
    for name in ("metrics.jsonl", "fusion_weights.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert a["alma"] == b["alma"] and a["bytes_up"] == b["bytes_up"]
    c = simulate(tiny_cfg("seed=1"), str(tmp_path / "c"))
    assert (tmp_path / "c" / "metrics.jsonl").read_text() != (
        tmp_path / "a" / "metrics.jsonl"
    ).read_text()
    assert c["alma"] != a["alma"]


def test_local_strategy_sends_no_knowledge(tiny_cfg, tmp_path):
    s = simulate(tiny_cfg("strategy=local"), str(tmp_path / "l"))
    assert s["bytes_up"] < 10_000 * s["rounds"]  # metrics only, no soft labels
    assert not (tmp_path / "l" / "fusion_weights.jsonl").exists()
    rows = _lines(tmp_path / "l" / "metrics.jsonl")
    assert all("distill_loss" not in r for r in rows)
    # without fine-tuning, the evaluated model is the locally trained one
    assert all(r["accuracy"] == r["local_accuracy"] for r in rows)


def test_cli_default_run_end_to_end(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedkt.server",
            "run",
            "--set",
            "rounds=2",
            "--set",
            "strategy=fkd",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "round 2/2" in proc.stderr and "ALMA" in proc.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["strategy"] == "fkd" and summary["fusion"] == "mean"
    w = read_fusion_weights(tmp_path / "r")[2][1]
    np.testing.assert_allclose(w, np.full((10, 10), 0.1))  # vanilla FKD: uniform mean


def test_teacher_student_clients_with_two_view_sade_fusion(tiny_cfg, tmp_path):
    """Through Flower: cnn-small teachers with mlp students, SADE over two views."""
    cfg = tiny_cfg(
        "rounds=1",
        "model.name=cnn-small",
        "model.student=mlp",
        "strategy.fusion=sade",
        "transfer.views=2",
    )
    summary = simulate(cfg, str(tmp_path))
    assert summary["architectures"] == ["cnn-small>mlp"] * N
    rows = _lines(tmp_path / "metrics.jsonl")
    assert len(rows) == N
    for r in rows:
        assert r["accuracy"] == r["student_accuracy"] and 0.0 <= r["teacher_accuracy"] <= 1.0
        assert np.isfinite(r["student_train_loss"]) and np.isfinite(r["distill_loss"])
    (line,) = _lines(tmp_path / "rounds.jsonl")
    assert line["participants"] == N and line["rejected"] == 0
    assert 2 * N * M * C * 4 < line["bytes_up"]  # both views' soft labels travel
