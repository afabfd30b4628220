"""The watcher that ends a stopped command's Ray processes after the command has exited
(fedkt.server.end_after_exit): it kills nothing while the command lives, everything it
was given once the command is gone, and never a process that merely reuses a PID."""

import os
import subprocess
import sys
import time

import psutil
from tiny import ROOT

from benchmarks.processes import alive, start_time
from fedkt.server.end_after_exit import kill_all

PARENT = """
import os, subprocess, sys, time
import psutil
from fedkt.server.end_after_exit import end_after_exit
victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
watcher = end_after_exit([psutil.Process(victim.pid)])
print(victim.pid, watcher.pid, flush=True)
sys.stdin.readline()  # lives until told to go
os._exit(143)
"""


def _gone(pid: int, started: int | None, within: float) -> bool:
    """``pid`` (the process that started at ``started``) has ended within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.05)
    return False


def test_the_watcher_kills_only_after_its_parent_has_exited():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    victim, watcher = (int(x) for x in parent.stdout.readline().split())
    started = {pid: start_time(pid) for pid in (victim, watcher)}
    try:
        time.sleep(1)
        assert alive(victim, started[victim])  # parent alive: kept
        assert alive(watcher, started[watcher])
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(30) == 143  # the parent's own status, untouched by the watcher
        assert _gone(victim, started[victim], 10), "the watcher did not end its process"
        assert _gone(watcher, started[watcher], 10), "the watcher did not exit after its work"
    finally:
        for pid in (victim, watcher):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_a_reused_pid_is_not_killed():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(proc.pid).create_time()
        assert kill_all([f"{proc.pid}:{started + 1.0!r}", "not-a-pid:1.0", "999999999:1.0"]) == 0
        assert proc.poll() is None
        assert kill_all([f"{proc.pid}:{started!r}"]) == 1
        assert proc.wait(10) == -9
    finally:
        proc.kill()
