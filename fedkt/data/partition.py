"""Label partitions across clients with Flower Datasets' partitioners.

The partitioners operate on a Hugging Face ``datasets.Dataset``; we build a two-column
in-memory one (``label``, ``idx``) from the labels alone, so no images are copied, and
read the indices back from each partition.
"""

from __future__ import annotations

import warnings

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
            # The column as one NumPy array (not row by row through Python: that took
            # seconds per process at 100 clients and most of a minute at 10,000).
            parts = [
                np.asarray(
                    partitioner.load_partition(i).with_format("numpy")[:]["idx"], dtype=np.int64
                )
                for i in range(num_clients)
            ]
    except ValueError as exc:
        raise ConfigError(f"partition: {name} cannot split {len(labels)} samples: {exc}") from None
    return [np.sort(p) for p in parts]
