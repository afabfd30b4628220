"""Who holds what: a federation's index arrays, derived from a config with NumPy alone.

Deriving a layout is cheap in arithmetic but not in imports: Flower Datasets'
partitioners work on a Hugging Face ``datasets.Dataset``, and importing ``datasets`` and
``flwr_datasets`` (with pyarrow, pandas and matplotlib) keeps about 0.2 GiB in a process
for the rest of its life. A layout is derived once per machine and kept in
:mod:`fedkt.data.layout_cache`, so :func:`prepare_layouts` derives the ones the cache
lacks in a short-lived process of their own (this module run as a script): the
simulation's driver, which lives as long as the run, then only loads them. Measured on the
20-client MNIST workload of ``benchmarks.htfllib``: the driver held 0.44 GiB during a run
whose layout was not cached yet, 0.29 GiB when it was. This module imports no torch, so
the extra process costs the partitioning's own imports and little more.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

from fedkt.config import ExperimentConfig
from fedkt.data import layout_cache
from fedkt.data.layout_cache import Layout
from fedkt.data.sources import ArrayDataset, cached_dataset, data_dir, dataset_of
from fedkt.errors import ConfigError, FedktError
from fedkt.seeding import rng

log = logging.getLogger(__name__)

#: The config fields a layout depends on (with the labels it is drawn from: see
#: :func:`fedkt.data.layout_cache.layout_key`).
LAYOUT_FIELDS = ("dataset", "data", "seed", "num_clients", "partition", "transfer", "evaluation")


def transfer_dataset(
    cfg: ExperimentConfig, ds: ArrayDataset, folder_override: str | None = None
) -> ArrayDataset:
    """The dataset the transfer set is drawn from (``ds`` itself, or ``transfer.source``);
    a transfer setting the data cannot serve is a ConfigError."""
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
        return ds
    from fedkt.data.sources import DATASETS

    if t.source not in DATASETS:
        raise ConfigError(
            f"transfer.source: unknown dataset {t.source!r} (use 'train' or one of: "
            f"{', '.join(DATASETS.names())})"
        )
    root = data_dir(folder_override or cfg.data_dir)
    tds = cached_dataset(t.source, str(root / t.source))
    if tds.input_shape != ds.input_shape:
        raise ConfigError(
            f"transfer.source: {t.source} images are {tds.input_shape}, {cfg.dataset} images "
            f"are {ds.input_shape}"
        )
    return tds


def layout_key(cfg: ExperimentConfig, ds: ArrayDataset, tds: ArrayDataset) -> str:
    """The layout cache's key for ``cfg`` on these datasets."""
    fields = json.loads(cfg.to_json())
    return layout_cache.layout_key(
        json.dumps({k: fields[k] for k in LAYOUT_FIELDS}, sort_keys=True),
        ds.train_y,
        ds.test_y,
        *([] if cfg.transfer.source == "train" else [tds.train_y]),
        *([] if ds.train_groups is None else [ds.train_groups]),
    )


def layout_of(cfg: ExperimentConfig, ds: ArrayDataset, tds: ArrayDataset) -> Layout:
    """The layout of ``cfg``: the one an earlier process of this machine derived
    (:mod:`fedkt.data.layout_cache`), or derived here and kept (deterministic in
    ``cfg.seed``)."""
    key = layout_key(cfg, ds, tds)
    n_eval = len(ds.train_y) if cfg.evaluation.split == "validation" else len(ds.test_y)
    layout = layout_cache.load(key, cfg.num_clients, len(ds.train_y), n_eval, len(tds.train_y))
    if layout is None:
        layout = derive_layout(cfg, ds, tds)
        layout_cache.store(key, layout)
    return layout


def prepare_layouts(
    configs: Sequence[ExperimentConfig], folder_override: str | None = None
) -> None:
    """Derive, in one process of their own, the layouts of ``configs`` that the layout cache
    lacks (see the module's docstring). Nothing is reported from there: a config whose
    layout cannot be derived, a cache that cannot be written or a process that cannot start
    leave the layout to be derived where it is needed, which reports any error as before."""
    if layout_cache.cache_dir() is None:
        return
    missing: dict[str, ExperimentConfig] = {}
    for cfg in configs:
        try:
            ds = dataset_of(cfg, folder_override)
            key = layout_key(cfg, ds, transfer_dataset(cfg, ds, folder_override))
        except FedktError:
            continue
        if not layout_cache.contains(key):
            missing.setdefault(key, cfg)
    if not missing:
        return
    request = json.dumps(
        {"folder": folder_override, "configs": [c.to_json() for c in missing.values()]}
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            input=request,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        log.debug("layouts: no process of their own (%s); derived where needed", exc)
        return
    if done.returncode:
        log.debug("layouts: their process exited with %s: %s", done.returncode, done.stderr[-2000:])


def _derive_requested() -> int:
    """The layout process: derive and keep the layout of every config on stdin."""
    request = json.loads(sys.stdin.read())
    folder = request["folder"]
    for text in request["configs"]:
        cfg = ExperimentConfig.model_validate_json(text)
        try:
            ds = dataset_of(cfg, folder)
            layout_of(cfg, ds, transfer_dataset(cfg, ds, folder))
        except FedktError as exc:  # derived (and reported) again where it is needed
            print(f"{cfg.dataset}: {exc}", file=sys.stderr)
    return 0


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


def derive_layout(cfg: ExperimentConfig, ds: ArrayDataset, tds: ArrayDataset) -> Layout:
    """Who holds what: the transfer set, each client's private and evaluation indices and
    the global evaluation subset; a layout the config cannot produce is a ConfigError."""
    from fedkt.data.partition import partition_labels  # (Flower Datasets: only here)

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


if __name__ == "__main__":
    sys.exit(_derive_requested())
