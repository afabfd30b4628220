"""fedkt-supernode: Flower's SuperNode loop with its sleeps capped (so a waiting message is
fetched within the poll interval, not up to 3 s later), everything else untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fedkt.clients import supernode

#: The console script `fedkt-supernode` (what deploy/scripts/supernode.sh runs), by module.
COMMAND = [sys.executable, "-m", "fedkt.clients.supernode", "--help"]


def test_sleep_is_capped_and_the_rest_of_time_is_the_real_module():
    t = supernode.CappedSleepTime(0.05)
    start = time.perf_counter()
    t.sleep(3)  # the SuperNode's wait when the SuperLink has no message for it
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    t.sleep(0.01)  # shorter waits are kept as they are
    assert time.perf_counter() - start >= 0.009
    start = time.perf_counter()
    t.sleep(0.5)  # its wait for its own ClientApp's reply: at most LOCAL_WAIT
    assert time.perf_counter() - start < 0.3
    assert supernode.CappedSleepTime(3.0, local=0.2).local == 0.2
    assert t.time is time.time and t.monotonic is time.monotonic


def test_install_patches_only_flowers_supernode_loop(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert supernode.install(0.2) and isinstance(loop.time, supernode.CappedSleepTime)
    assert loop.time.cap == 0.2 and supernode.install(0.5) and loop.time.cap == 0.5
    assert time.sleep is not loop.time.sleep  # the real module is not changed
    monkeypatch.setattr(loop, "time", object())  # a Flower whose loop is not as expected
    assert not supernode.install(0.2)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "100"])
def test_a_bad_poll_interval_is_one_line(value):
    proc = subprocess.run(
        COMMAND, capture_output=True, text=True, timeout=120,
        env={**os.environ, "FEDKT_SUPERNODE_POLL": value},
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().endswith(f"got {value!r}") and "Traceback" not in proc.stderr


def test_a_bad_pull_backoff_is_one_line():
    proc = subprocess.run(
        COMMAND, capture_output=True, text=True, timeout=120,
        env={**os.environ, "FEDKT_PULL_BACKOFF": "soon"},
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == "fedkt-supernode: FEDKT_PULL_BACKOFF must be seconds in (0, 10], got 'soon'"
    )


def test_the_command_runs_flowers_supernode():
    proc = subprocess.run(COMMAND, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: flower-supernode" in proc.stdout
