"""Round checkpoints, so that a killed run continues where it stopped and ends with the
same numbers as an uninterrupted one.

Every random choice in fedkt is derived from (seed, purpose, client, round), so the only
state a resumed run needs is: the server's (last committed round, global arrays, the
state of stateful server optimisers such as FedAdam's moments) and each client's model
weights at the end of its last round. Clients write their own checkpoints (in a
deployment, on their own disks); every file is written atomically (temporary file +
rename), so a kill at any moment leaves the previous checkpoint intact.

Layout under a results directory: ``checkpoint/server.pt`` and
``checkpoint/clients/client-<partition>/round-<r>.pt`` (each client keeps its two newest, in
its own folder, so saving never lists other clients' files: with 1,000 clients a shared
folder made every save scan 2,000 names).

Every file holds tensors, numbers, strings, lists and dicts only, and is read with
``torch.load(weights_only=True)``: a checkpoint is data another process (or another
machine, in a deployment) wrote, so reading it must never run code. NumPy arrays in the
server's state are stored as tensors and come back as NumPy arrays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedkt.errors import FedktError, one_line

SERVER_FILE = "server.pt"
_CLIENT_RE = re.compile(r"round-(\d+)\.pt$")


class CheckpointError(FedktError):
    """A results directory that cannot be resumed."""


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / "checkpoint"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _leaves(obj: Any, kind: type, convert: Callable[[Any], Any]) -> Any:
    """``obj`` with every leaf of type ``kind`` (at any depth of dicts, lists, tuples)
    replaced by ``convert(leaf)``."""
    if isinstance(obj, kind):
        return convert(obj)
    if isinstance(obj, dict):
        return {k: _leaves(v, kind, convert) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_leaves(v, kind, convert) for v in obj)
    return obj


def _to_tensors(obj: Any) -> Any:
    """NumPy arrays -> tensors, so the file holds no Python objects."""
    return _leaves(obj, np.ndarray, lambda a: torch.from_numpy(np.array(a, copy=True)))


def _to_numpy(obj: Any) -> Any:
    """The inverse of :func:`_to_tensors` for the server's state (which holds no tensors)."""
    return _leaves(obj, torch.Tensor, lambda t: t.numpy())


def _load(path: Path) -> Any:
    """``torch.load`` that never runs code: anything but tensors and plain values is
    refused with one line naming the file and what it holds."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not even a torch file: unreadable
            found = []
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds Python objects ({', '.join(found[:3])}), not only "
                "tensors and plain values, and fedkt never unpickles objects from a file (a "
                "checkpoint written by fedkt before 2026-11-29 stored NumPy arrays: start that "
                "run again without --resume)"
            ) from None
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {one_line(str(exc))})"
        ) from None


def save_server(out_dir: str | os.PathLike[str], server_round: int, state: dict[str, Any]) -> None:
    atomic_save(
        {"round": server_round, **_to_tensors(state)}, checkpoint_dir(out_dir) / SERVER_FILE
    )


def load_server(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = checkpoint_dir(out_dir) / SERVER_FILE
    if not path.exists():
        raise CheckpointError(
            f"{out_dir}: no checkpoint to resume from (no round finished, or not a fedkt results "
            "directory)"
        )
    state = _load(path)
    if not isinstance(state, dict) or not isinstance(state.get("round"), int):
        raise CheckpointError(f"{path}: not a fedkt server checkpoint (no round number)")
    return _to_numpy(state)


def _client_folder(folder: Path, partition_id: int) -> Path:
    return folder / f"client-{partition_id}"


def _client_files(folder: Path, partition_id: int) -> list[tuple[int, Path]]:
    own = _client_folder(folder, partition_id)
    if not own.is_dir():
        return []
    out = []
    for path in own.iterdir():
        m = _CLIENT_RE.match(path.name)
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out)


def save_client(
    folder: str | os.PathLike[str],
    partition_id: int,
    server_round: int,
    state: dict[str, torch.Tensor],
) -> None:
    """Save a client's weights after its part in ``server_round``; keep its two newest
    files (the newer may belong to a round the server never committed)."""
    folder = Path(folder)
    atomic_save(state, _client_folder(folder, partition_id) / f"round-{server_round}.pt")
    for _, old in _client_files(folder, partition_id)[:-2]:
        old.unlink(missing_ok=True)


def load_client(
    folder: str | os.PathLike[str], partition_id: int, upto_round: int
) -> tuple[int, dict[str, torch.Tensor]] | None:
    """The client's newest saved state from a round <= ``upto_round``, or None."""
    for r, path in reversed(_client_files(Path(folder), partition_id)):
        if r <= upto_round:
            state = _load(path)
            if not isinstance(state, dict) or not all(
                isinstance(v, torch.Tensor) for v in state.values()
            ):
                raise CheckpointError(f"{path}: not a fedkt client checkpoint (weights by name)")
            return r, state
    return None
