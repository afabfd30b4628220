"""Arrays converted once into a folder of ``.npy`` files and memory-mapped by every process.

A dataset that is not stored as raw arrays on disk (CIFAR's pickled batches, a Hugging Face
or CSV dataset) would otherwise be decoded into a private copy in every process of a
simulation: the driver and each worker. Converted once into ``.npy`` files, it is mapped
read-only instead: the pages are the operating system's file cache, shared by all processes
and read only where a client's rows lie. Writes are atomic (a half-written folder is never
taken for a converted one) and races between processes converting at once are harmless.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

META = "meta.json"


def fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of ``path`` or of every file under it: a changed file is
    a changed dataset, converted again."""
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def is_stored(folder: Path) -> bool:
    return (folder / META).is_file()


def store(folder: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` (one ``<name>.npy`` each) and ``meta`` into ``folder`` atomically;
    when another process stored it first, theirs is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", arr, allow_pickle=False)
        (tmp / META).write_text(json.dumps(dict(meta), indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process converted it first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The stored arrays, memory-mapped read-only, and the metadata."""
    meta = json.loads((folder / META).read_text())
    arrays = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in folder.glob("*.npy")}
    return arrays, meta
