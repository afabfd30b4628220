"""The same apps run under Flower's own CLI: `flwr run .` on a local SuperLink.

`flwr run` starts a detached local SuperLink (plus its SuperExec and simulation
processes); the test finds every process of that tree through its private FLWR_HOME
and stops each by PID.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _processes_mentioning(text: str) -> list[int]:
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


def _children(pid: int) -> list[int]:
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


def _stop_tree(pids: list[int]) -> None:
    tree, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(_children(pid))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(1)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the detached SuperLink")
def test_flwr_run_dot_runs_the_same_apps(tmp_path):
    home = tmp_path / "flwr-home"
    out = tmp_path / "out"
    # flwr starts `flower-superlink` from PATH: make the venv's scripts visible.
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    flwr = str(Path(sys.executable).with_name("flwr"))
    overrides = "rounds=2,num_clients=2,wait_for_nodes=30,train.epochs=1,distill.epochs=1"
    try:
        proc = subprocess.run(
            [flwr, "run", ".", "--stream", "--run-config", f"overrides='{overrides}' out='{out}'"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
    finally:
        _stop_tree(_processes_mentioning(str(home)))
    assert summary["strategy"] == "knfu" and summary["rounds"] == 2 and summary["num_clients"] == 2
    assert 0.0 < summary["alma"] <= 1.0 and summary["bytes_up"] > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert _processes_mentioning(str(home)) == []
