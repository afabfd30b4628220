"""The same apps run under Flower's own CLI: `flwr run .` on a local SuperLink.

`flwr run` starts a detached local SuperLink (plus its SuperExec and simulation
processes); the test finds every process of that tree through its private FLWR_HOME
and stops each by PID. The run is read once the SuperLink says it has finished
(benchmarks.flwr_runs), not when its log stream ends.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks.flwr_runs import flwr_run_to_end
from benchmarks.processes import processes_mentioning, stop_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the detached SuperLink")
def test_flwr_run_dot_runs_the_same_apps(tmp_path):
    home = tmp_path / "flwr-home"
    out = tmp_path / "out"
    # flwr starts `flower-superlink` from PATH: make the venv's scripts visible.
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    overrides = "rounds=2,num_clients=2,wait_for_nodes=30,train.epochs=1,distill.epochs=1"
    try:
        proc = flwr_run_to_end(f"overrides='{overrides}' out='{out}'", None, env, ROOT, 400)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        # a bad override is the CLI's one line in the run's log, not Flower's traceback
        bad = flwr_run_to_end("overrides='rounds=-1'", None, env, ROOT, 400)
        said = bad.stdout + bad.stderr
        assert "fedkt: error: rounds: Input should be greater than or equal to 1" in said, said
        assert "Traceback" not in said, said[-3000:]
    finally:
        stop_tree(processes_mentioning(str(home)))
    assert summary["strategy"] == "knfu" and summary["rounds"] == 2 and summary["num_clients"] == 2
    assert 0.0 < summary["alma"] <= 1.0 and summary["bytes_up"] > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert processes_mentioning(str(home)) == []
