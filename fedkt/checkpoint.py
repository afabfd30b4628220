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
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from fedkt.errors import FedktError

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


def save_server(out_dir: str | os.PathLike[str], server_round: int, state: dict[str, Any]) -> None:
    atomic_save({"round": server_round, **state}, checkpoint_dir(out_dir) / SERVER_FILE)


def load_server(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = checkpoint_dir(out_dir) / SERVER_FILE
    if not path.exists():
        raise CheckpointError(
            f"{out_dir}: no checkpoint to resume from (no round finished, or not a fedkt results "
            "directory)"
        )
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None


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
            return r, torch.load(path, weights_only=True)
    return None
