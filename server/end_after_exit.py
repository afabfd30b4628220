"""End a set of processes as soon as the process that asks for it has exited.

Why: Ray's driver (the process that runs Flower's simulation engine) ends *itself* with
exit status 1 and no message (Ray's ``QuickExit``: "The connection to the plasma store is
failed. Terminate the process", written only to Ray's log file) the moment one of its
threads finds the raylet gone. When a stopped ``fedkt run`` killed its Ray processes and
then printed its one closing line and exited with 128 + the signal, a thread of Flower's
engine still fetching a result sometimes got there first: the process ended with status 1
and without the line (2 runs in 12 on 2 cores, SIGTERM after round 2). A process that
exits at a stop anyway therefore leaves the killing to a small watcher, started here,
which waits until that process has exited and then kills what it was given. The watcher
is a child that notices its parent's exit by being re-parented (``os.getppid`` changes),
which happens at the exit itself, not when the exit status is collected.

A process given here is identified by its PID *and* its start time, so that a PID reused
after the process ended is never killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil

POLL_SECONDS = 0.02


def end_after_exit(procs: Sequence[psutil.Process]) -> subprocess.Popen[bytes] | None:
    """Start the watcher that SIGKILLs ``procs`` once this process has exited; return it
    (None when there is nothing to end). Its output goes nowhere, so it never holds this
    process's pipes open past the exit of this process."""
    ids = []
    for proc in procs:
        try:
            ids.append(f"{proc.pid}:{proc.create_time()!r}")
        except psutil.Error:
            continue  # already gone
    if not ids:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid()), *ids],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a later signal to this process's group is not for it
    )


def kill_all(ids: Sequence[str]) -> int:
    """SIGKILL each ``pid:start-time`` of ``ids`` still running as that same process
    (with the children it has by now); return how many were killed."""
    targets: list[psutil.Process] = []
    for item in ids:
        pid, _, started = item.partition(":")
        try:
            proc = psutil.Process(int(pid))
            if proc.create_time() != float(started):
                continue  # the PID now belongs to another process
            targets += [proc, *proc.children(recursive=True)]
        except (psutil.Error, ValueError):
            continue
    return kill(targets)


def kill(procs: Sequence[psutil.Process]) -> int:
    """SIGKILL each of ``procs`` still running (psutil checks that its PID was not reused);
    return how many were killed."""
    killed = 0
    for proc in procs:
        try:
            proc.kill()
            killed += 1
        except psutil.Error:
            continue
    return killed


def main(argv: Sequence[str]) -> int:
    """``python -m fedkt.server.end_after_exit PARENT PID:START...``: wait until PARENT
    has exited, then kill the rest."""
    parent, ids = int(argv[0]), argv[1:]
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    kill_all(ids)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
