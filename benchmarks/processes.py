"""Finding and stopping the processes a test started (and their children), by PID."""

import os
import signal
import time
from pathlib import Path


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells it apart from a
    later process that reuses its PID; None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """``pid`` is still the process that started at ``started`` and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == started


def stop_tree(pids: list[int]) -> dict[int, int | None]:
    """SIGTERM, then SIGKILL, every process in the trees under ``pids``; a PID is only
    signalled while it still belongs to the process seen when the tree was collected.
    Returns the tree (pid -> start time) so callers can check nothing is left."""
    tree: dict[int, int | None] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree[pid] = start_time(pid)
            todo.extend(children(pid))
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid, started in tree.items():
            if started is not None and alive(pid, started):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        # A signalled process is not gone at once (a loaded machine takes a moment to tear
        # it down, even after SIGKILL): wait until none is left, up to the grace period.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            started is not None and alive(pid, started) for pid, started in tree.items()
        ):
            time.sleep(0.1)
    return tree
