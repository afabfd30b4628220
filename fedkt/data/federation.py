"""The federation's data layout: who holds what, derived deterministically from a config.

Every process (the server, each simulation worker, each deployed client) can rebuild
the same layout from the config alone, so no data ever travels over the wire (the index
arrays are derived in :mod:`fedkt.data.layout`; this module turns them into tensors):
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
from fedkt.data.layout import layout_of, transfer_dataset
from fedkt.data.sources import ArrayDataset, dataset_of
from fedkt.data.views import augmented_view
from fedkt.seeding import torch_generator


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


def build_federation(cfg: ExperimentConfig, folder_override: str | None = None) -> Federation:
    """The federation of ``cfg``: its datasets and layout (:mod:`fedkt.data.layout`,
    derived or loaded from the layout cache)."""
    ds = dataset_of(cfg, folder_override)
    tds = transfer_dataset(cfg, ds, folder_override)
    lay = layout_of(cfg, ds, tds)
    t = cfg.transfer
    return Federation(
        ds,
        tds,
        lay.transfer_idx,
        lay.client_idx,
        lay.client_test_idx,
        lay.global_test_idx,
        cfg.architecture_names(),
        t.labelled,
        t.views,
        cfg.seed,
        eval_split=cfg.evaluation.split,
    )


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
