"""Data: dataset sources and loaders, fetching, partitioning and the federation layout."""

from fedkt.data.sources import DATASETS, ArrayDataset, data_dir, load_dataset

__all__ = ["DATASETS", "ArrayDataset", "data_dir", "load_dataset"]
