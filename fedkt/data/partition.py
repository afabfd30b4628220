"""Label partitions across clients with Flower Datasets' partitioners.

The partitioners operate on a Hugging Face ``datasets.Dataset``; we build a two-column
in-memory one (``label``, ``idx``) from the labels alone, so no images are copied, and
read the indices back from each partition.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
    SizePartitioner,
)

from fedkt.errors import ConfigError
from fedkt.registry import Registry
from fedkt.seeding import derive_seed, rng

PARTITIONERS: Registry = Registry("partition")


@PARTITIONERS.register("iid")
def _iid(num_clients: int, labels: np.ndarray, seed: int, **_: object):
    return IidPartitioner(num_partitions=num_clients)


@PARTITIONERS.register("dirichlet")
def _dirichlet(
    num_clients: int,
    labels: np.ndarray,
    seed: int,
    alpha: float,
    min_partition_size: int,
    **_: object,
):
    return DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=alpha,
        min_partition_size=min_partition_size,
        self_balancing=False,
        shuffle=True,
        seed=derive_seed(seed, "dirichlet") % 2**32,
    )


@PARTITIONERS.register("pathological")
def _pathological(
    num_clients: int, labels: np.ndarray, seed: int, classes_per_client: int, **_: object
):
    return PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=classes_per_client,
        class_assignment_mode="first-deterministic",  # every class is used by someone
        shuffle=True,
        seed=derive_seed(seed, "pathological") % 2**32,
    )


@PARTITIONERS.register("quantity_skew")
def _quantity_skew(
    num_clients: int,
    labels: np.ndarray,
    seed: int,
    alpha: float,
    min_partition_size: int,
    **_: object,
):
    """Label distribution stays IID; client *sizes* follow Dirichlet(alpha)."""
    n = len(labels)
    if n < num_clients * min_partition_size:
        raise ConfigError(
            f"partition: {n} samples cannot give {num_clients} clients {min_partition_size} each"
        )
    spare = n - num_clients * min_partition_size
    share = rng(seed, "quantity_skew").dirichlet(np.full(num_clients, alpha))
    sizes = np.floor(share * spare).astype(int) + min_partition_size
    sizes[: n - sizes.sum()] += 1  # hand out the rounding remainder
    return SizePartitioner(partition_sizes=sizes.tolist())


def _partition_rows(partitioner: Any, num_clients: int, order: np.ndarray) -> list[np.ndarray]:
    """Each partition's rows (indices into the unshuffled labels).

    Flower Datasets' partitioners that decide every partition at once keep the decision
    as ``_partition_id_to_indices`` (positions in their dataset); reading it replaces one
    ``load_partition`` per client, each a Hugging Face ``select`` with fingerprinting:
    10,000 of those took 50-100 s in every process that built the layout (the driver
    and each simulation worker). Partitioners without that table are loaded one
    partition at a time; ``tests/test_partition.py`` checks both give the same rows."""
    first = partitioner.load_partition(0)  # makes the partitioner decide the split
    table = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(table, dict) and set(table) == set(range(num_clients)):
        return [order[np.asarray(table[i], dtype=np.int64)] for i in range(num_clients)]
    # The column as one NumPy array (not row by row through Python).
    return [
        np.asarray(
            (first if i == 0 else partitioner.load_partition(i)).with_format("numpy")[:]["idx"],
            dtype=np.int64,
        )
        for i in range(num_clients)
    ]


def partition_labels(
    labels: np.ndarray, num_clients: int, name: str, seed: int, **params: object
) -> list[np.ndarray]:
    """Indices (into ``labels``) of each client's private data, one array per client."""
    factory = PARTITIONERS.get(name)
    # Shuffle first so contiguous partitioners (iid, size) still see a random order.
    order = rng(seed, "partition-order").permutation(len(labels))
    ds = Dataset.from_dict({"label": labels[order].tolist(), "idx": order.tolist()})
    partitioner = factory(num_clients=num_clients, labels=labels, seed=seed, **params)
    partitioner.dataset = ds
    try:
        with warnings.catch_warnings():
            # The Dirichlet partitioner warns on every resampling; the outcome (a split, or
            # a one-line error when it gives up) is what users need to see.
            warnings.simplefilter("ignore", UserWarning)
            parts = _partition_rows(partitioner, num_clients, order)
    except ValueError as exc:
        raise ConfigError(f"partition: {name} cannot split {len(labels)} samples: {exc}") from None
    return [np.sort(p) for p in parts]


def natural_groups(group_ids: np.ndarray) -> list[np.ndarray]:
    """The rows of each distinct group id, in the order of the sorted ids: what Flower
    Datasets' ``NaturalIdPartitioner`` gives (partition k = the k-th sorted id), computed
    with one stable sort instead of its per-row Python loop and per-partition ``select``,
    which take minutes for the 100,000 groups of a large natural split."""
    ids = np.asarray(group_ids)
    order = np.argsort(ids, kind="stable")
    _, starts = np.unique(ids[order], return_index=True)
    return [np.sort(part) for part in np.split(order, starts[1:])]
