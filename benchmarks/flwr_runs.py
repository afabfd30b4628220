"""``flwr run`` from a test or benchmark, returning only once the run has finished.

Flower's log stream (``flwr run --stream``, ``flwr log --stream``) ends when its SuperLink
says the run is over. In one CI run (Flower 1.39, a loopback deployment) ``flwr run
--stream`` instead ended with exit code 0 a second or two after the run was created,
before its ServerApp had started, and the test went on to read results that were never
written. The cause inside Flower is not known, so whoever reads a run's results asks the
SuperLink whether the run has finished (``flwr ls``) and follows its log again if not.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

FINISHED = "finished"  # the prefix of a finished run's status in ``flwr ls``


class StreamEndedEarly(RuntimeWarning):
    """``flwr run --stream`` ended before its run had finished."""


def _connection(connection: str | None) -> list[str]:
    """The SuperLink argument of a ``flwr`` command (none: the CLI's default one)."""
    return [connection] if connection else []


def run_status(run_id: str, connection: str | None, env: dict[str, str]) -> str:
    """The run's status as ``flwr ls`` gives it: ``pending``, ``starting``, ``running``
    or ``finished:<completed|failed|stopped>``."""
    listed = subprocess.run(
        ["flwr", "ls", *_connection(connection), "--run-id", run_id, "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        return str(json.loads(listed.stdout)["runs"][0]["status"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AssertionError(
            f"flwr ls --run-id {run_id} said: {listed.stdout[-1000:]}{listed.stderr[-1000:]}"
        ) from exc


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
