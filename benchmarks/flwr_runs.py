"""``flwr run`` from a test or benchmark, returning only once the run has finished.

Flower's log stream (``flwr run --stream``, ``flwr log --stream``) ends when its SuperLink
says the run is over, and ``flwr run`` exits 0 whatever the run's outcome. In one CI run
(Flower 1.39, a loopback deployment) it returned a second or two after the run was
created, with no log at all, and the run was not ``finished:completed``; its results were
still missing 40 s later. The likelier reading is that the run failed before its ServerApp
could upload a log line (Flower's ``flwr-serverapp`` pushes a ``failed`` status with its
exception in ``status-details`` and starts its log uploader only after pulling its task);
the other is that the stream ended while the run was still starting. So whoever reads a
run's results asks the SuperLink for the run's record (``flwr ls``): a run not finished is
followed again (``flwr log --stream``), and a failed one's ``status-details`` say why.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FINISHED = "finished"  # the prefix of a finished run's status in ``flwr ls``


class StreamEndedEarly(RuntimeWarning):
    """``flwr run --stream`` ended before its run had finished."""


def _connection(connection: str | None) -> list[str]:
    """The SuperLink argument of a ``flwr`` command (none: the CLI's default one)."""
    return [connection] if connection else []


def run_record(run_id: str, connection: str | None, env: dict[str, str]) -> dict[str, Any]:
    """The run as ``flwr ls --run-id --format json`` gives it: ``status``,
    ``status-details`` (why a run failed), traffic, compute time..."""
    listed = subprocess.run(
        ["flwr", "ls", *_connection(connection), "--run-id", run_id, "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        record = json.loads(listed.stdout)["runs"][0]
        if isinstance(record, dict) and isinstance(record["status"], str):
            return record
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    raise AssertionError(
        f"flwr ls --run-id {run_id} said: {listed.stdout[-1000:]}{listed.stderr[-1000:]}"
    )


def run_status(run_id: str, connection: str | None, env: dict[str, str]) -> str:
    """The run's status: ``pending``, ``starting``, ``running`` or
    ``finished:<completed|failed|stopped>``."""
    return str(run_record(run_id, connection, env)["status"])


def follow_run(run_id: str, connection: str | None, env: dict[str, str], timeout: float) -> str:
    """Stream the run's log (``flwr log --stream``, from its start) until the run has
    finished; returns the last stream's text."""
    deadline = time.monotonic() + timeout
    unfinished = AssertionError(f"run {run_id} has not finished in {timeout:.0f} s")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise unfinished
        try:
            streamed = subprocess.run(
                ["flwr", "log", run_id, *_connection(connection), "--stream"],
                env=env, capture_output=True, text=True, timeout=left,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise unfinished from None
        if run_status(run_id, connection, env).startswith(FINISHED):
            return streamed.stdout
        time.sleep(1)


def flwr_run_to_end(
    run_config: str,
    connection: str | None,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess:
    """``flwr run . [CONNECTION] --stream --run-config RUN_CONFIG`` in ``cwd``; returns once
    the run has finished, with the run's whole log in ``stdout`` (what ``flwr run``
    printed, then the followed log if its stream ended first). A failed start (nonzero
    exit, or no run ID printed) is returned as it is."""
    deadline = time.monotonic() + timeout
    args: Sequence[str] = [
        "flwr", "run", ".", *_connection(connection), "--stream", "--run-config", run_config
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    started = re.search(r"started run (\d+)", proc.stdout)
    if proc.returncode != 0 or started is None:
        return proc
    run_id = started.group(1)
    status = run_status(run_id, connection, env)
    if status.startswith(FINISHED):
        return proc
    # a warning, so that pytest's summary in CI says when it happened again
    warnings.warn(
        f"flwr run --stream ended while run {run_id} was {status}; following its log again",
        StreamEndedEarly,
        stacklevel=2,
    )
    log = follow_run(run_id, connection, env, deadline - time.monotonic())
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout + log, proc.stderr)
