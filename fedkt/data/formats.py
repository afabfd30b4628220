"""Readers for the on-disk formats of the datasets we load: IDX (MNIST family) and the
python-pickle batches of CIFAR-10. Plain NumPy so they stay fast and dependency-free."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedkt.errors import DataError

_IDX_DTYPES: dict[int, str | type] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its declared shape.

    An uncompressed file of one-byte (or native-order) values is memory-mapped read-only
    rather than read: the pages are the operating system's file cache, shared by every
    process of the machine (the simulation's driver and each worker) and touched only
    where a client's rows lie, instead of one private copy of the whole file per process
    (47 MB for MNIST's training images)."""
    path = Path(path)
    gzipped = path.suffix == ".gz"
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read() if gzipped else fh.read(4)
            if not gzipped and len(raw) == 4 and raw[2] in _IDX_DTYPES:
                raw += fh.read(4 * raw[3])
            size = len(raw) if gzipped else path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (IDX header incomplete)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        raise DataError(f"{path} has {size} bytes, its IDX header implies {expected}")
    if 0 in shape:
        return np.empty(shape, dtype=dtype.newbyteorder("="))
    try:
        if not gzipped and dtype.isnative:
            return np.memmap(path, dtype=dtype, mode="r", offset=header, shape=shape)
        if not gzipped:
            raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in IDX format; used by tests and fixture tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    Path(path).write_bytes(header + array.tobytes())


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles of a dict of bytes, lists and one NumPy array; this
    unpickler builds those and refuses every other class or function, so a crafted file
    in the data folder cannot run code (plain ``pickle.load`` would)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name} (not part of a CIFAR batch)")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError,
            AttributeError, IndexError) as exc:  # fmt: skip
        raise DataError(f"{path} is not a CIFAR python batch: {exc}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path} has data of shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
