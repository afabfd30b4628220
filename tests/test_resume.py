"""Resume: a run killed with SIGKILL mid-way continues with ``fedkt run --resume DIR`` and
ends with exactly the metrics of an uninterrupted run with the same seed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import RunsCode

from benchmarks.processes import alive, children, start_time
from fedkt.checkpoint import CheckpointError, load_client, load_server, save_client, save_server
from fedkt.server.cli import main

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "num_clients=4",
    "rounds=5",
    "train.epochs=1",
    "distill.epochs=1",
    "transfer.size=200",
    "evaluation.client_test_size=100",
    "evaluation.global_test_size=200",
]


def test_client_checkpoints_keep_two_newest_and_pick_by_round(tmp_path):
    for r in (1, 2, 5):
        save_client(tmp_path, 3, r, {"w": torch.full((2,), float(r))})
    save_client(tmp_path, 4, 1, {"w": torch.zeros(1)})
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pt")) == [
        "client-3/round-2.pt",
        "client-3/round-5.pt",
        "client-4/round-1.pt",
    ]
    r, state = load_client(tmp_path, 3, 4)  # round 5 was never committed by the server
    assert r == 2 and state["w"].tolist() == [2.0, 2.0]
    assert load_client(tmp_path, 3, 1) is None and load_client(tmp_path / "nope", 3, 9) is None


def test_server_checkpoint_round_trip_and_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        load_server(tmp_path)
    save_server(tmp_path, 3, {"arrays": {}, "strategy": {}})
    assert load_server(tmp_path)["round"] == 3
    (tmp_path / "checkpoint" / "server.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_server(tmp_path)


def test_server_state_with_numpy_round_trips_as_data(tmp_path):
    m_t = {"w": np.arange(3, dtype=np.float32)}
    save_server(tmp_path, 2, {"arrays": {"w": np.ones((2, 2))}, "strategy": {"m_t": m_t}})
    state = load_server(tmp_path)
    assert state["round"] == 2
    assert isinstance(state["arrays"]["w"], np.ndarray) and state["arrays"]["w"].dtype == np.float64
    np.testing.assert_array_equal(state["strategy"]["m_t"]["w"], m_t["w"])
    assert (
        torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "checkpoint" / "server.pt")
        == []
    )  # the file holds no Python objects at all


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    save_server(run, 1, {"arrays": {}, "strategy": {}})
    (run / "config.yaml").write_text("rounds: 3\n")
    torch.save({"round": 1, "x": RunsCode(marker)}, run / "checkpoint" / "server.pt")
    with pytest.raises(CheckpointError, match=r"refused: it holds Python objects \(posix.system"):
        load_server(run)
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "refused" in err and "Traceback" not in err and len(err.splitlines()) == 1
    (tmp_path / "client-0").mkdir()
    torch.save({"w": RunsCode(marker)}, tmp_path / "client-0" / "round-1.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_client(tmp_path, 0, 1)
    assert not marker.exists()


def test_resume_refuses_bad_directories(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a fedkt results directory" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--set", "rounds=3"]) == 2
    assert "drop CONFIG, --set and --out" in capsys.readouterr().err


def _metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _round_lines(out: Path) -> list[dict]:
    drop = ("wall_seconds",)
    return [
        {k: v for k, v in json.loads(line).items() if k not in drop}
        for line in (out / "rounds.jsonl").read_text().splitlines()
    ]


def _interrupt_after_round(cmd: list[str], out: Path, how: signal.Signals) -> tuple[int, int, str]:
    """Start ``cmd``; once round 2 is checkpointed, SIGKILL its whole process tree, SIGINT
    its process group as Ctrl-C in a terminal would, or SIGTERM its main process only, as
    ``timeout`` and Docker do. Returns (checkpointed round at the interrupt, exit code,
    stderr)."""
    err_path = out.with_suffix(".stderr")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(err_path, "w"),
        start_new_session=True,
        # As a terminal's foreground job: a suite started in the background (`cmd &` in a
        # script) hands its children SIGINT ignored, and an ignored SIGINT stays ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    server_pt = out / "checkpoint" / "server.pt"
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if server_pt.exists():
            try:
                done = torch.load(server_pt, weights_only=True)["round"]
            except Exception:  # noqa: BLE001 - being replaced right now
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    tree, todo = [proc.pid], [proc.pid]
    while todo:
        kids = children(todo.pop())
        tree += kids
        todo += kids
    if how == signal.SIGKILL:
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    elif how == signal.SIGTERM:
        os.kill(proc.pid, how)
    else:
        os.killpg(proc.pid, how)
    sent = time.monotonic()
    code = proc.wait(60)
    assert time.monotonic() - sent < 10, f"{how.name}: the run took too long to stop"
    if how != signal.SIGKILL:  # the stopped run ended its Ray processes (raylet, GCS, agents)
        tree = [(pid, start_time(pid)) for pid in tree[1:]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p, t) for p, t in tree):
            time.sleep(0.1)
        left = [p for p, t in tree if alive(p, t)]
        assert not left, f"{how.name}: Ray processes left running: {left}"
    return done, code, err_path.read_text()


@pytest.mark.slow
def test_kill_9_ctrl_c_or_sigterm_then_resume_equals_uninterrupted(tmp_path, one_engine):
    from fedkt.config import load_config
    from fedkt.server.simulation import simulate

    references = {}
    for strategy, how in (
        ("knfu", signal.SIGKILL),
        ("fedadam", signal.SIGKILL),
        ("knfu", signal.SIGINT),
        ("fedadam", signal.SIGTERM),
    ):
        full, cut = tmp_path / f"{strategy}-full", tmp_path / f"{strategy}-{how.name}"
        if strategy not in references:
            references[strategy] = simulate(
                load_config(None, [*ARGS, f"strategy={strategy}"]), str(full)
            )
        cmd = [
            sys.executable,
            "-m",
            "fedkt.server",
            "run",
            "--quiet",
            "--out",
            str(cut),
            "--set",
            f"strategy={strategy}",
        ]
        for a in ARGS:
            cmd += ["--set", a]
        done, code, err = _interrupt_after_round(cmd, cut, how)
        assert 2 <= done < 5, f"interrupted after round {done}: the run was not stopped mid-way"
        assert not (cut / "summary.json").exists()
        if how != signal.SIGKILL:
            # one line, no Python traceback and no Ray stack dump ("*** SIGTERM received")
            assert code == 128 + how and err.strip().splitlines() == [
                f"fedkt: {'interrupted' if how == signal.SIGINT else 'terminated (SIGTERM)'}; "
                f"finished rounds are kept in {cut}; continue with: fedkt run --resume {cut}"
            ], err[-2000:]
        assert main(["run", "--quiet", "--resume", str(cut)]) == 0
        assert _metric_rows(cut) == _metric_rows(full), (strategy, how)
        assert _round_lines(cut) == _round_lines(full), (strategy, how)
        resumed = json.loads((cut / "summary.json").read_text())
        assert resumed["alma"] == references[strategy]["alma"] and resumed["rounds"] == 5
