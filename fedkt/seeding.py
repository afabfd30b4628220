"""Derived, order-independent seeds.

Every random choice draws from a generator keyed by (experiment seed, purpose, client,
round, ...). A client's numbers therefore do not depend on which worker process runs
it or in which order clients are scheduled, so the same config and seed always give
the same results, and every strategy under one seed sees the same partitions and the
same initial models.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def _key(part: int | str) -> int:
    return part if isinstance(part, int) else zlib.crc32(part.encode())


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and the keys naming its purpose."""
    ss = np.random.SeedSequence([seed, *(_key(k) for k in keys)])
    return int(ss.generate_state(2, np.uint64)[0] >> np.uint64(1))


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: int | str) -> torch.Generator:
    import torch  # (here only: deriving a layout, in a process of its own, needs no torch)

    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g
