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
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from fedkt.errors import FedktError, one_line

SERVER_FILE = "server.pt"
_CLIENT_RE = re.compile(r"round-(\d+)\.pt$")


class CheckpointError(FedktError):
    """A results directory that cannot be resumed."""


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / "checkpoint"


def atomic_save(obj: Any, path: Path, pin: bool = False) -> int | None:
    """``torch.save`` through a temporary file and a rename. ``pin``: return a read-only
    descriptor of the file written, opened before the rename, so it is that file whatever
    replaces ``path`` later (the caller closes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    fd = os.open(tmp, os.O_RDONLY) if pin else None
    try:
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return fd


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


def _load(path: Path, file: BinaryIO | None = None) -> Any:
    """``torch.load`` (of ``path``, or of ``file``, that file open) that never runs code:
    anything but tensors and plain values is refused with one line naming the file and
    what it holds."""
    try:
        return torch.load(path if file is None else file, weights_only=True)
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


class RecentStates:
    """The client states this process wrote or read last, so that reading one of those files
    again costs two ``stat`` calls and a copy instead of ``torch.load``.

    Why: in a simulation the model of a client lives in its checkpoint file between calls,
    and a warm worker serving a few clients reads back, every call, the file it wrote on
    the call before (BENCHMARKS.md, "Waits inside each round and each cell"). The file
    stays the truth.
    Each entry holds the file it came from open, so that inode cannot be reused, and is
    used only while the path still names that inode: checkpoint files are never written
    in place (:func:`atomic_save` renames a new file over them), so the same inode means
    the same bytes, whoever else writes the folder. Copies go in and out, so nothing a
    caller does to its dict changes what a later read returns. Bounded by ``limit`` bytes
    of tensor data and ``max_files`` open files, least recently used first out;
    ``limit=0`` turns it off. A state larger than an eighth of ``limit`` is not kept: a
    worker serving many clients of a large model would rarely read one back before it
    was pushed out, and would pay the memory for nothing (20 clients of a 6.6 MB CNN on
    2 workers: 76 MiB more at the peak, no time saved; BENCHMARKS.md)."""

    def __init__(self, limit: int, max_files: int = 64) -> None:
        self.limit = limit
        self.max_files = max_files
        self._entries: OrderedDict[str, tuple[int, dict[str, torch.Tensor], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in state.items()}

    def put(self, path: Path, fd: int, state: dict[str, torch.Tensor]) -> None:
        """Remember ``state`` as the content of the file open as ``fd`` (which this takes
        over, and closes when the entry goes), the file ``path`` names."""
        size = sum(v.numel() * v.element_size() for v in state.values())
        with self._lock:
            self._drop(str(path))
            if self.limit <= 0 or size > self.limit // 8 or self.max_files < 1:
                os.close(fd)
                return
            self._entries[str(path)] = (fd, self._copy(state), size)
            self._bytes += size
            while self._bytes > self.limit or len(self._entries) > self.max_files:
                self._drop(next(iter(self._entries)))

    def get(self, path: Path) -> dict[str, torch.Tensor] | None:
        """A copy of what ``path`` holds, if it still names the file remembered for it."""
        with self._lock:
            entry = self._entries.get(str(path))
            if entry is None:
                return None
            if not _same_file(path, entry[0]):
                self._drop(str(path))
                return None
            self._entries.move_to_end(str(path))
            return self._copy(entry[1])

    def forget(self, path: Path) -> None:
        with self._lock:
            self._drop(str(path))

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            os.close(entry[0])
            self._bytes -= entry[2]


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


#: This process's recent client states: 32 MiB holds every state of a worker serving
#: dozens of small models (up to 4 MiB each; a miss only costs the file read).
recent_states = RecentStates(32 << 20)


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
    path = _client_folder(folder, partition_id) / f"round-{server_round}.pt"
    fd = atomic_save(state, path, pin=recent_states.limit > 0)
    if fd is not None:
        recent_states.put(path, fd, state)
    for _, old in _client_files(folder, partition_id)[:-2]:
        recent_states.forget(old)
        old.unlink(missing_ok=True)


def _load_client_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a client's checkpoint, and remember it (:data:`recent_states`) as the file
    that was read, held open."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        fd = None  # gone or unreadable: _load says so in one line
    try:
        if fd is None:
            state = _load(path)
        else:
            with open(os.dup(fd), "rb") as file:
                state = _load(path, file)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise CheckpointError(f"{path}: not a fedkt client checkpoint (weights by name)")
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    if fd is not None:
        recent_states.put(path, fd, state)
    return state


def load_client(
    folder: str | os.PathLike[str], partition_id: int, upto_round: int
) -> tuple[int, dict[str, torch.Tensor]] | None:
    """The client's newest saved state from a round <= ``upto_round``, or None."""
    for r, path in reversed(_client_files(Path(folder), partition_id)):
        if r <= upto_round:
            kept = recent_states.get(path)
            if kept is not None:
                return r, kept
            return r, _load_client_file(path)
    return None
