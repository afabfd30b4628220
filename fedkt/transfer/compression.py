"""FedKD's compression of model weights by truncated SVD (Wu et al. 2022): each weight
matrix is sent as the factors of its best rank-r approximation, r the smallest rank that
keeps a fraction ``energy`` of the matrix's energy (sum of squared singular values). Pure
NumPy, no Flower: a state (name -> array) becomes a flat record of arrays and back.

A weight of more than two dimensions (a convolution's ``out x in x kh x kw``) is
compressed as the ``out x (in kh kw)`` matrix [ours: HtFLlib's ``decomposition`` takes the
SVD of every ``kh x kw`` kernel slice instead, which a 3 x 3 kernel barely shrinks]. A
matrix is sent whole where its factors would not be smaller, and so is every vector,
scalar and integer buffer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Separator between a weight's name and the name of one of its factors.
SEP = "::"
_FACTORS = ("u", "s", "vt", "shape")


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """The smallest r with ``sum(s[:r]^2) >= energy * sum(s^2)`` (at least 1; all of them
    when the matrix is zero)."""
    sq = np.square(np.asarray(singular_values, dtype=np.float64))
    total = sq.sum()
    if total <= 0:
        return len(sq)
    return int(min(len(sq), max(1, np.searchsorted(np.cumsum(sq), energy * total) + 1)))


def compress(state: Mapping[str, np.ndarray], energy: float) -> dict[str, np.ndarray]:
    """Every float matrix of ``state`` as factors ``name::u`` (m x r), ``name::s`` (r),
    ``name::vt`` (r x n) and ``name::shape`` (its original shape) where that is smaller
    than the matrix; every other array under its own name, unchanged."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if SEP in name:
            raise ValueError(f"weight name {name!r} contains {SEP!r}")
        a = np.asarray(value)
        if a.ndim < 2 or a.shape[0] < 2 or not np.issubdtype(a.dtype, np.floating):
            out[name] = a
            continue
        m = a.reshape(a.shape[0], -1)
        if not np.isfinite(m).all():
            raise ValueError(f"weight {name!r} holds NaN or infinite values (training diverged)")
        u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
        r = rank_for_energy(s, energy)
        if r * (m.shape[0] + m.shape[1] + 1) + a.ndim >= m.size:
            out[name] = a
            continue
        out[name + SEP + "u"] = u[:, :r].astype(a.dtype)
        out[name + SEP + "s"] = s[:r].astype(a.dtype)
        out[name + SEP + "vt"] = vt[:r].astype(a.dtype)
        out[name + SEP + "shape"] = np.asarray(a.shape, dtype=np.int64)
    return out


def decompress(record: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`compress`: ``(u * s) @ vt`` in the original shape, in record
    order; raises ValueError naming a weight whose factors are missing or do not fit."""
    out: dict[str, np.ndarray] = {}
    for key, value in record.items():
        name, sep, part = key.partition(SEP)
        if not sep:
            out[name] = np.asarray(value)
            continue
        if part not in _FACTORS:
            raise ValueError(f"unknown factor {key!r}")
        if name in out or part != "u":
            continue
        try:
            u, s, vt = (np.asarray(record[name + SEP + f]) for f in ("u", "s", "vt"))
            shape = tuple(int(d) for d in np.asarray(record[name + SEP + "shape"]))
            out[name] = ((u * s[None, :]) @ vt).astype(u.dtype).reshape(shape)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"weight {name!r}: unusable factors ({exc})") from None
    missing = {k.partition(SEP)[0] for k in record if SEP in k} - set(out)
    if missing:
        raise ValueError(f"weight {sorted(missing)[0]!r}: factors without 'u'")
    return out


class SVDCodec:
    """Weights through :func:`compress` (client -> server and back) at one energy."""

    def __init__(self, energy: float) -> None:
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy!r}")
        self.energy = float(energy)

    def encode(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return compress(state, self.energy)

    def decode(self, record: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decompress(record)
