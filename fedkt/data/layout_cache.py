"""A disk cache of data layouts: every process of a machine derives a layout once.

A layout (who holds which samples) is a pure function of the config, the dataset's labels
and the code, and every process rebuilds it (the driver, each simulation worker, each
deployed client) so that no data travels over the wire. At 10,000 clients that took
seconds per process (Flower Datasets' partitioner, the per-client test draws, importing
the partitioners' dependencies), all of it on the way to the first round. The first
process to build a layout stores its index arrays here; the others, and later runs of the
same data, load them.

The key covers everything the layout depends on: the data-relevant config fields, a hash
of the labels it partitions, fedkt's code digest and the versions of the partitioning
libraries, so a changed dataset, config or code never reads a stale layout. Files are
plain ``.npz`` arrays loaded with ``allow_pickle=False`` (they cannot carry code) and
checked before use; anything unreadable or inconsistent is ignored and the layout
rebuilt. Where the cache cannot be written (read-only home, another machine of a Ray
cluster) every process simply builds the layout itself, as before.

``FEDKT_LAYOUT_CACHE``: the folder to use, or ``off`` (default: ``~/.cache/fedkt/layouts``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from fedkt.provenance import code_digest

log = logging.getLogger(__name__)

#: Libraries whose partitioning code decides a layout (besides fedkt's own).
PARTITION_LIBRARIES = ("flwr-datasets", "datasets", "numpy")
#: Layout files kept; the oldest beyond this are removed when one is stored.
KEEP = 64


@dataclass(frozen=True)
class Layout:
    """A federation's index arrays (see :class:`fedkt.data.federation.Federation`)."""

    transfer_idx: np.ndarray
    client_idx: list[np.ndarray]
    client_test_idx: list[np.ndarray]
    global_test_idx: np.ndarray


def cache_dir() -> Path | None:
    """Where layouts are kept, or None when caching is off."""
    setting = os.environ.get("FEDKT_LAYOUT_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fedkt" / "layouts"


def layout_key(config_key: str, *labels: np.ndarray) -> str:
    """The cache key of a layout: ``config_key`` (the data-relevant config fields as JSON),
    the ``labels`` arrays it is drawn from, and the code that draws it."""
    h = hashlib.sha256(config_key.encode())
    for y in labels:
        h.update(f"{y.dtype}{y.shape}".encode())
        h.update(np.ascontiguousarray(y).tobytes())
    versions = {}
    for lib in PARTITION_LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "-"
    h.update(json.dumps([code_digest(), versions]).encode())
    return h.hexdigest()


def _ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0, *(len(a) for a in arrays)]).astype(np.int64)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.empty(0, np.int64)
    return flat, offsets


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def store(key: str, layout: Layout) -> None:
    """Keep ``layout`` under ``key`` (atomically; silently skipped where it cannot be
    written: the cache only saves time)."""
    folder = cache_dir()
    if folder is None:
        return
    clients, client_offsets = _ragged(layout.client_idx)
    tests, test_offsets = _ragged(layout.client_test_idx)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                transfer_idx=layout.transfer_idx.astype(np.int64),
                client_idx=clients,
                client_offsets=client_offsets,
                client_test_idx=tests,
                client_test_offsets=test_offsets,
                global_test_idx=layout.global_test_idx.astype(np.int64),
            )
        os.replace(tmp, folder / f"{key}.npz")
        _prune(folder)
    except OSError as exc:
        log.debug("layout cache: not stored (%s)", exc)


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)


def contains(key: str) -> bool:
    """Whether a layout is stored under ``key`` (:func:`load` still checks it)."""
    folder = cache_dir()
    return folder is not None and (folder / f"{key}.npz").is_file()


def load(
    key: str, num_clients: int, num_private: int, num_eval: int, num_transfer: int
) -> Layout | None:
    """The layout stored under ``key``, or None when there is none or it does not fit the
    federation it claims to be (``num_clients``; index bounds of the private, evaluation and
    transfer arrays): a damaged or foreign file is ignored, never trusted."""
    folder = cache_dir()
    if folder is None:
        return None
    path = folder / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged file (BadZipFile, pickled arrays, ...)
        log.debug("layout cache: %s unreadable (%s); rebuilding", path, exc)
        return None
    try:
        layout = Layout(
            arrays["transfer_idx"],
            _split(arrays["client_idx"], arrays["client_offsets"]),
            _split(arrays["client_test_idx"], arrays["client_test_offsets"]),
            arrays["global_test_idx"],
        )
    except (KeyError, IndexError, TypeError) as exc:
        log.debug("layout cache: %s incomplete (%s); rebuilding", path, exc)
        return None
    bounds = [
        (layout.transfer_idx, num_transfer),
        (arrays["client_idx"], num_private),
        (arrays["client_test_idx"], num_eval),
        (layout.global_test_idx, num_eval),
    ]
    sane = (
        len(layout.client_idx) == num_clients
        and len(layout.client_test_idx) == num_clients
        and all(
            a.ndim == 1 and a.dtype == np.int64 and (a.size == 0 or 0 <= a.min() <= a.max() < n)
            for a, n in bounds
        )
        and all(
            o.ndim == 1 and o[0] == 0 and np.all(np.diff(o) >= 0) and o[-1] == len(flat)
            for o, flat in (
                (arrays["client_offsets"], arrays["client_idx"]),
                (arrays["client_test_offsets"], arrays["client_test_idx"]),
            )
        )
        and all(len(i) > 0 for i in layout.client_idx)
    )
    if not sane:
        log.debug("layout cache: %s does not fit this federation; rebuilding", path)
        return None
    return layout
