"""FedKD's compression of model weights by truncated SVD (Wu et al. 2022): each weight
matrix is sent as the factors of its best rank-r approximation, r the smallest rank that
keeps a fraction ``energy`` of the matrix's energy (sum of squared singular values). Pure
NumPy, no Flower: a state (name -> array) becomes a flat record of arrays and back.

A weight of more than two dimensions (a convolution's ``out x in x kh x kw``) is
compressed as the ``out x (in kh kw)`` matrix [ours: HtFLlib's ``decomposition`` takes the
SVD of every ``kh x kw`` kernel slice instead, which a 3 x 3 kernel barely shrinks]. A
matrix is sent whole where its factors would not be smaller, and so is every vector,
scalar and integer buffer.

Updates instead of weights (the paper's way, ``base`` below): a matrix travels as the
factors of its *change* from weights both ends already hold (what the server sent this
round), and the receiver adds the recovered change to its copy. An update is small and of
low rank where the weights are not, so the same energy loses far less of the model. Only a
client's reply can travel this way: with client sampling, a client sent the global model
has no earlier copy the server could count on, so the server's model always travels as
weights. A record of updates says so (``UPDATE_MARK``), so it is never read as weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Separator between a weight's name and the name of one of its factors.
SEP = "::"
_FACTORS = ("u", "s", "vt", "shape")
#: The key that marks a record of updates (factors of changes from a base).
UPDATE_MARK = SEP + "update"


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """The smallest r with ``sum(s[:r]^2) >= energy * sum(s^2)`` (at least 1; all of them
    when the matrix is zero)."""
    sq = np.square(np.asarray(singular_values, dtype=np.float64))
    total = sq.sum()
    if total <= 0:
        return len(sq)
    return int(min(len(sq), max(1, np.searchsorted(np.cumsum(sq), energy * total) + 1)))


def compress(
    state: Mapping[str, np.ndarray],
    energy: float,
    base: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every float matrix of ``state`` as factors ``name::u`` (m x r), ``name::s`` (r),
    ``name::vt`` (r x n) and ``name::shape`` (its original shape) where that is smaller
    than the matrix; every other array under its own name, unchanged.

    With ``base`` (weights the receiver holds, same names and shapes) the factors are those
    of ``state - base`` and the record carries :data:`UPDATE_MARK`; what is sent whole is
    still the value itself, so nothing sent whole loses a bit to the subtraction."""
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
        if not np.isfinite(a).all():
            raise ValueError(f"weight {name!r} holds NaN or infinite values (training diverged)")
        m = a.reshape(a.shape[0], -1).astype(np.float64)
        if base is not None:
            m = m - _base_of(base, name, a.shape).reshape(m.shape)
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        r = rank_for_energy(s, energy)
        if r * (m.shape[0] + m.shape[1] + 1) + a.ndim >= m.size:
            out[name] = a
            continue
        out[name + SEP + "u"] = u[:, :r].astype(a.dtype)
        out[name + SEP + "s"] = s[:r].astype(a.dtype)
        out[name + SEP + "vt"] = vt[:r].astype(a.dtype)
        out[name + SEP + "shape"] = np.asarray(a.shape, dtype=np.int64)
    if base is not None:
        out[UPDATE_MARK] = np.ones((), dtype=np.int8)
    return out


def _base_of(base: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The base's ``name`` as float64, checked against the weight's shape."""
    if name not in base:
        raise ValueError(f"weight {name!r}: no base weights to take its update from")
    b = np.asarray(base[name])
    if b.shape != tuple(shape):
        raise ValueError(f"weight {name!r}: base has shape {b.shape}, the weight {tuple(shape)}")
    return b.astype(np.float64)


def decompress(
    record: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Inverse of :func:`compress`: ``(u * s) @ vt`` in the original shape (added to
    ``base`` when the record holds updates), in record order; raises ValueError naming a
    weight whose factors are missing or do not fit, or updates without a base."""
    updates = UPDATE_MARK in record
    if updates and base is None:
        raise ValueError("the record holds updates, and no base weights to add them to")
    out: dict[str, np.ndarray] = {}
    for key, value in record.items():
        if key == UPDATE_MARK:
            continue
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
            m = (u * s[None, :]) @ vt
            if updates:
                assert base is not None
                m = _base_of(base, name, shape).reshape(m.shape) + m
            out[name] = m.astype(u.dtype).reshape(shape)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"weight {name!r}: unusable factors ({exc})") from None
    missing = {k.partition(SEP)[0] for k in record if SEP in k and k != UPDATE_MARK} - set(out)
    if missing:
        raise ValueError(f"weight {sorted(missing)[0]!r}: factors without 'u'")
    return out


class SVDCodec:
    """Weights through :func:`compress` at one energy: the server's model as weights, a
    client's reply as weights or, with ``updates``, as its change from what it was sent."""

    def __init__(self, energy: float, updates: bool = False) -> None:
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy!r}")
        self.energy = float(energy)
        self.updates = bool(updates)

    def encode(
        self, state: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        return compress(state, self.energy, base if self.updates else None)

    def decode(
        self, record: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        return decompress(record, base)
