"""Partitions and the federation layout: seeded, disjoint, and shaped as configured."""

import numpy as np
import pytest

from fedkt.config import load_config
from fedkt.data.federation import build_federation
from fedkt.data.partition import partition_labels
from fedkt.errors import ConfigError

LABELS = np.random.default_rng(0).integers(0, 10, 3000)
PARAMS = dict(alpha=0.5, min_partition_size=10, classes_per_client=2)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "quantity_skew"])
def test_partitions_are_deterministic_disjoint_and_complete(name):
    a = partition_labels(LABELS, 8, name, seed=3, **PARAMS)
    b = partition_labels(LABELS, 8, name, seed=3, **PARAMS)
    c = partition_labels(LABELS, 8, name, seed=4, **PARAMS)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    allidx = np.concatenate(a)
    assert len(allidx) == len(np.unique(allidx))  # disjoint
    if name != "pathological":
        assert len(allidx) == len(LABELS)  # everything assigned


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "quantity_skew"])
def test_reading_the_partitioners_table_equals_loading_each_partition(name, monkeypatch):
    import fedkt.data.partition as partition

    fast = partition_labels(LABELS, 8, name, seed=3, **PARAMS)
    real_getattr = getattr

    def no_table(obj, attr, *default):  # as if the partitioner kept no table
        if attr == "_partition_id_to_indices":
            return None
        return real_getattr(obj, attr, *default)

    monkeypatch.setattr(partition, "getattr", no_table, raising=False)
    slow = partition_labels(LABELS, 8, name, seed=3, **PARAMS)
    assert all(np.array_equal(x, y) for x, y in zip(fast, slow, strict=True))


def test_pathological_limits_classes_and_dirichlet_skews():
    parts = partition_labels(LABELS, 8, "pathological", seed=0, **PARAMS)
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    iid = partition_labels(LABELS, 8, "iid", seed=0, **PARAMS)
    skewed = partition_labels(LABELS, 8, "dirichlet", seed=0, **{**PARAMS, "alpha": 0.1})

    def spread(parts):  # mean total-variation distance of client label mixes from global
        glob = np.bincount(LABELS, minlength=10) / len(LABELS)
        return np.mean(
            [
                0.5 * np.abs(np.bincount(LABELS[p], minlength=10) / len(p) - glob).sum()
                for p in parts
            ]
        )

    assert spread(skewed) > 0.4 > 0.1 > spread(iid)


def test_quantity_skew_keeps_labels_but_varies_sizes():
    parts = partition_labels(LABELS, 8, "quantity_skew", seed=0, **{**PARAMS, "alpha": 0.5})
    sizes = [len(p) for p in parts]
    assert max(sizes) > 3 * min(sizes) and min(sizes) >= 10


def test_federation_layout():
    cfg = load_config(
        None,
        [
            "num_clients=5",
            "transfer.size=200",
            "evaluation.client_test_size=80",
            "partition.alpha=0.3",
        ],
    )
    fed = build_federation(cfg)
    priv = np.concatenate(fed.client_idx)
    assert (
        len(np.intersect1d(priv, fed.transfer_idx)) == 0
    )  # transfer set disjoint from private data
    assert len(fed.transfer_idx) == 200
    for i in range(5):
        hist = fed.label_histogram(i)
        test_hist = np.bincount(fed.dataset.test_y[fed.client_test_idx[i]], minlength=10)
        # classes a client never saw are absent from its test split; the label mix follows its own
        assert set(np.flatnonzero(test_hist)) <= set(np.flatnonzero(hist))
        assert 0.5 * np.abs(test_hist / test_hist.sum() - hist / hist.sum()).sum() < 0.05
    again = build_federation(cfg)
    assert all(np.array_equal(x, y) for x, y in zip(fed.client_idx, again.client_idx))
    assert np.array_equal(fed.transfer_idx, again.transfer_idx)


def test_samples_per_client_and_too_many_requested():
    fed = build_federation(load_config(None, ["num_clients=4", "partition.samples_per_client=50"]))
    assert sum(len(i) for i in fed.client_idx) == 200
    with pytest.raises(ConfigError, match="samples_per_client"):
        build_federation(load_config(None, ["num_clients=4", "partition.samples_per_client=5000"]))


def test_heterogeneous_tiers_assignment():
    cfg = load_config(
        None,
        [
            "num_clients=5",
            "model.tiers=[{name: mlp, fraction: 0.4}, {name: cnn-small, fraction: 0.6}]",
        ],
    )
    assert cfg.architecture_names() == ["mlp", "mlp", "cnn-small", "cnn-small", "cnn-small"]
