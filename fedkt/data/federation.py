"""The federation's data layout: who holds what, derived deterministically from a config.

Every process (the server, each simulation worker, each deployed client) can rebuild
the same layout from the config alone, so no data ever travels over the wire:
- a transfer set D_t, disjoint from all private data (held out of the train split, or
  drawn from another dataset with the same input shape);
- each client's private training indices (a Flower Datasets partition);
- each client's test split, drawn from the test set with that client's label
  distribution (what ALMA is measured on);
- a global test subset, to see how each local model does on the whole task.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import torch

from fedkt.config import ExperimentConfig
from fedkt.data import layout_cache
from fedkt.data.layout_cache import Layout
from fedkt.data.sources import ArrayDataset, cached_dataset, data_dir, dataset_of
from fedkt.data.views import augmented_view
from fedkt.errors import ConfigError
from fedkt.seeding import rng, torch_generator


@dataclass(frozen=True)
class ClientData:
    """Tensors one client trains, distils and evaluates on."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    global_x: torch.Tensor
    global_y: torch.Tensor
    transfer_x: torch.Tensor
    transfer_y: torch.Tensor | None


@dataclass(frozen=True)
class Federation:
    dataset: ArrayDataset
    transfer_dataset: ArrayDataset
    transfer_idx: np.ndarray
    client_idx: list[np.ndarray]
    client_test_idx: list[np.ndarray]
    global_test_idx: np.ndarray
    architectures: list[str]
    transfer_labelled: bool
    transfer_views: int = 1
    seed: int = 0
    #: "test": client and global evaluation indices point into the test split;
    #: "validation": into the training split (held out of each client's private data).
    eval_split: str = "test"

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.dataset.input_shape

    @property
    def transfer_size(self) -> int:
        return len(self.transfer_idx)

    def label_histogram(self, client: int) -> np.ndarray:
        return np.bincount(
            self.dataset.train_y[self.client_idx[client]], minlength=self.num_classes
        )

    def transfer_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The transfer set (inputs, and labels when the config says it is labelled).

        With two views the rows are the M samples, then the same M samples' augmented
        view (see :mod:`fedkt.data.views`), 2M rows in all. Built once per process and
        shared (read-only) by every client built from this federation."""
        return self._transfer

    def transfer_truth(self) -> torch.Tensor:
        """The true labels of the transfer samples (first view), whatever
        ``transfer.labelled`` says: only the server may read them, for a method whose
        paper gives the server labelled validation data (FedDF)."""
        return torch.from_numpy(self.transfer_dataset.train_y[self.transfer_idx])

    @functools.cached_property
    def _transfer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        tds = self.transfer_dataset
        x = tds.tensor(tds.train_x[self.transfer_idx])
        y = torch.from_numpy(tds.train_y[self.transfer_idx]) if self.transfer_labelled else None
        if self.transfer_views == 2:
            x = torch.cat([x, augmented_view(x, torch_generator(self.seed, "transfer-view"))])
            y = torch.cat([y, y]) if y is not None else None
        return x, y

    @functools.cached_property
    def _global_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The global test subset, built once per process and shared (read-only) by every
        client: rebuilding it for each client call copied megabytes per message."""
        x, y = self._eval_arrays
        return self.dataset.tensor(x[self.global_test_idx]), torch.from_numpy(
            y[self.global_test_idx]
        )

    @property
    def _eval_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset
        return (
            (ds.train_x, ds.train_y) if self.eval_split == "validation" else (ds.test_x, ds.test_y)
        )

    def client_data(self, client: int) -> ClientData:
        ds = self.dataset
        tr, te = self.client_idx[client], self.client_test_idx[client]
        transfer_x, transfer_y = self.transfer_tensors()
        global_x, global_y = self._global_test
        return ClientData(
            train_x=ds.tensor(ds.train_x[tr]),
            train_y=torch.from_numpy(ds.train_y[tr]),
            test_x=ds.tensor(self._eval_arrays[0][te]),
            test_y=torch.from_numpy(self._eval_arrays[1][te]),
            global_x=global_x,
            global_y=global_y,
            transfer_x=transfer_x,
            transfer_y=transfer_y,
        )


def _client_test_indices(
    pools: list[np.ndarray], hist: np.ndarray, size: int, generator: np.random.Generator
) -> np.ndarray:
    """``size`` test indices whose label mix follows ``hist`` (largest-remainder rounding);
    ``pools[c]``: the test indices of class ``c``, found once for every client (10,000
    clients each scanning the whole test split per class took seconds in every process)."""
    num_classes = len(hist)
    share = hist / max(hist.sum(), 1)
    exact = share * size
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: size - counts.sum()]] += 1
    picked = []
    for c in range(num_classes):
        if counts[c] == 0:
            continue
        pool = pools[c]
        picked.append(generator.choice(pool, size=min(counts[c], len(pool)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


#: The config fields a layout depends on (with the labels it is drawn from: see
#: :func:`fedkt.data.layout_cache.layout_key`).
LAYOUT_FIELDS = ("dataset", "data", "seed", "num_clients", "partition", "transfer", "evaluation")


def build_federation(cfg: ExperimentConfig, folder_override: str | None = None) -> Federation:
    """Derive the whole data layout from ``cfg`` (deterministic in ``cfg.seed``), or load
    the one an earlier process of this machine derived (:mod:`fedkt.data.layout_cache`)."""
    root = data_dir(folder_override or cfg.data_dir)
    ds = dataset_of(cfg, folder_override)
    t = cfg.transfer
    if cfg.partition.by is not None and t.source != "train":
        raise ConfigError(
            "transfer.source: a natural partition (partition.by) draws the transfer set from "
            "the groups no client holds; leave transfer.source: train"
        )
    if t.views > 1 and ds.modality != "image":
        raise ConfigError(
            f"transfer.views: the second view is a shifted image; {cfg.dataset} is "
            f"{ds.modality} data (use transfer.views: 1 and a fusion that needs one view)"
        )
    if t.source == "train":
        tds = ds
    else:
        from fedkt.data.sources import DATASETS

        if t.source not in DATASETS:
            raise ConfigError(
                f"transfer.source: unknown dataset {t.source!r} (use 'train' or one of: "
                f"{', '.join(DATASETS.names())})"
            )
        tds = cached_dataset(t.source, str(root / t.source))
        if tds.input_shape != ds.input_shape:
            raise ConfigError(
                f"transfer.source: {t.source} images are {tds.input_shape}, {cfg.dataset} images "
                f"are {ds.input_shape}"
            )
    fields = json.loads(cfg.to_json())
    key = layout_cache.layout_key(
        json.dumps({k: fields[k] for k in LAYOUT_FIELDS}, sort_keys=True),
        ds.train_y,
        ds.test_y,
        *([] if t.source == "train" else [tds.train_y]),
        *([] if ds.train_groups is None else [ds.train_groups]),
    )
    n_eval = len(ds.train_y) if cfg.evaluation.split == "validation" else len(ds.test_y)
    layout = layout_cache.load(key, cfg.num_clients, len(ds.train_y), n_eval, len(tds.train_y))
    if layout is None:
        layout = _derive_layout(cfg, ds, tds)
        layout_cache.store(key, layout)
    return Federation(
        ds,
        tds,
        layout.transfer_idx,
        layout.client_idx,
        layout.client_test_idx,
        layout.global_test_idx,
        cfg.architecture_names(),
        t.labelled,
        t.views,
        cfg.seed,
        eval_split=cfg.evaluation.split,
    )


def _derive_layout(cfg: ExperimentConfig, ds: ArrayDataset, tds: ArrayDataset) -> Layout:
    """Who holds what: the transfer set, each client's private and evaluation indices and
    the global evaluation subset; a layout the config cannot produce is a ConfigError."""
    from fedkt.data.partition import partition_labels  # (Flower Datasets: only when needed)

    n_train = len(ds.train_y)
    t = cfg.transfer
    if cfg.partition.by is not None:
        transfer_idx, client_idx = _natural_layout(cfg, ds)
        return _with_evaluation(cfg, ds, transfer_idx, client_idx)
    if t.source == "train":
        if t.size >= n_train:
            raise ConfigError(
                f"transfer.size: {t.size} leaves no private data ({cfg.dataset} has {n_train} "
                "training samples)"
            )
        transfer_idx = np.sort(
            rng(cfg.seed, "transfer").choice(n_train, size=t.size, replace=False)
        )
        remaining = np.setdiff1d(np.arange(n_train), transfer_idx)
    else:
        if t.size > len(tds.train_y):
            raise ConfigError(
                f"transfer.size: {t.size} exceeds the {len(tds.train_y)} samples of {t.source}"
            )
        transfer_idx = np.sort(
            rng(cfg.seed, "transfer").choice(len(tds.train_y), size=t.size, replace=False)
        )
        remaining = np.arange(n_train)

    p = cfg.partition
    if p.samples_per_client is not None:
        wanted = p.samples_per_client * cfg.num_clients
        if wanted > len(remaining):
            raise ConfigError(
                f"partition.samples_per_client: {cfg.num_clients} x {p.samples_per_client} = "
                f"{wanted} "
                f"exceeds the {len(remaining)} private samples available"
            )
        remaining = np.sort(rng(cfg.seed, "pool").choice(remaining, size=wanted, replace=False))
    parts = partition_labels(
        ds.train_y[remaining],
        cfg.num_clients,
        p.name,
        cfg.seed,
        alpha=p.alpha,
        min_partition_size=p.min_partition_size,
        classes_per_client=p.classes_per_client,
    )
    client_idx = [remaining[part] for part in parts]
    return _with_evaluation(cfg, ds, transfer_idx, client_idx)


def _natural_layout(cfg: ExperimentConfig, ds: ArrayDataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """A natural partition: ``num_clients`` groups of the ``partition.by`` column (drawn with
    the seed) are the clients, each with all of its rows (``samples_per_client``: at most
    that many, drawn); the transfer set is drawn from the rows of the other groups, so no
    client's writer, user or speaker is in it."""
    from fedkt.data.partition import natural_groups

    assert ds.train_groups is not None
    groups = natural_groups(ds.train_groups)
    by, n = cfg.partition.by, cfg.num_clients
    if n >= len(groups):
        raise ConfigError(
            f"partition.by: {cfg.dataset} has {len(groups)} distinct {by!r} values; "
            f"{n} clients need fewer than that (the transfer set comes from the groups left over)"
        )
    chosen = rng(cfg.seed, "natural-clients").permutation(len(groups))
    client_idx = []
    cap = cfg.partition.samples_per_client
    for k, g in enumerate(chosen[:n]):
        rows = groups[g]
        if cap is not None and len(rows) > cap:
            rows = np.sort(rng(cfg.seed, "natural-rows", k).choice(rows, size=cap, replace=False))
        client_idx.append(rows)
    held_out = np.sort(np.concatenate([groups[g] for g in chosen[n:]]))
    if cfg.transfer.size > len(held_out):
        raise ConfigError(
            f"transfer.size: {cfg.transfer.size} exceeds the {len(held_out)} rows of the "
            f"{len(groups) - n} {by!r} groups no client holds"
        )
    transfer_idx = np.sort(
        rng(cfg.seed, "transfer").choice(held_out, size=cfg.transfer.size, replace=False)
    )
    return transfer_idx, client_idx


def _with_evaluation(
    cfg: ExperimentConfig, ds: ArrayDataset, transfer_idx: np.ndarray, client_idx: list[np.ndarray]
) -> Layout:
    """The layout, with each client's evaluation rows and the global ones."""
    empty = [i for i, idx in enumerate(client_idx) if len(idx) == 0]
    if empty:
        raise ConfigError(
            f"partition: client {empty[0]} received no data; use fewer clients or more samples"
        )

    if cfg.evaluation.split == "validation":
        client_idx, client_test_idx, global_idx = _validation_split(cfg, client_idx)
    else:
        client_test_idx, global_idx = _test_split(cfg, ds, client_idx)
    return Layout(transfer_idx, client_idx, client_test_idx, global_idx)


def _test_split(
    cfg: ExperimentConfig, ds: ArrayDataset, client_idx: list[np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each client's test indices, drawn from the test split with its label distribution,
    and the global test subset."""
    n_test = len(ds.test_y)
    pools = [np.flatnonzero(ds.test_y == c) for c in range(ds.num_classes)]
    client_test_idx = [
        _client_test_indices(
            pools,
            np.bincount(ds.train_y[idx], minlength=ds.num_classes),
            min(cfg.evaluation.client_test_size, n_test),
            rng(cfg.seed, "client-test", i),
        )
        for i, idx in enumerate(client_idx)
    ]
    g = cfg.evaluation.global_test_size
    global_idx = (
        np.arange(n_test)
        if g is None or g >= n_test
        else np.sort(rng(cfg.seed, "global-test").choice(n_test, size=g, replace=False))
    )
    return client_test_idx, global_idx


def _validation_split(
    cfg: ExperimentConfig, client_idx: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Hold ``evaluation.validation_fraction`` of each client's private samples out (seeded
    per client): (training indices, validation indices, global validation indices), all
    into the *training* split. The union of the clients' validation sets is the global one."""
    frac = cfg.evaluation.validation_fraction
    train, val = [], []
    for i, idx in enumerate(client_idx):
        if len(idx) < 2:
            raise ConfigError(
                f"evaluation.split: client {i} has {len(idx)} sample(s), too few to hold any out"
            )
        k = min(len(idx) - 1, max(1, round(frac * len(idx))))
        order = rng(cfg.seed, "validation", i).permutation(len(idx))
        val.append(np.sort(idx[order[:k]]))
        train.append(np.sort(idx[order[k:]]))
    pooled = np.sort(np.concatenate(val))
    g = cfg.evaluation.global_test_size
    if g is not None and g < len(pooled):
        pooled = np.sort(rng(cfg.seed, "global-validation").choice(pooled, size=g, replace=False))
    return train, val, pooled


_DATA_FIELDS = (
    "dataset",
    "data",
    "data_dir",
    "seed",
    "num_clients",
    "partition",
    "transfer",
    "evaluation",
    "model",
)


@functools.lru_cache(maxsize=4)
def _cached(key: str, folder_override: str | None) -> Federation:
    return build_federation(ExperimentConfig.model_validate_json(key), folder_override)


def federation_for(cfg: ExperimentConfig, folder_override: str | None = None) -> Federation:
    """Process-wide cached :func:`build_federation` (keyed by the data-relevant fields)."""
    key = json.loads(cfg.to_json())
    key = {k: v for k, v in key.items() if k in _DATA_FIELDS}
    return _cached(ExperimentConfig.model_validate(key).to_json(), folder_override)
