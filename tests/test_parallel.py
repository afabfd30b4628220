"""Cells of a comparison in parallel jobs: never more cores than the machine gives, and the
same numbers as running the cells one after another."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedkt.cli import main
from fedkt.errors import ConfigError
from fedkt.parallel import CORE_GIB, JOB_GIB, plan_jobs


def test_auto_jobs_are_one_per_core_as_far_as_cells_and_memory_allow():
    assert plan_jobs("auto", cells=110, cpus=2) == (2, 1)
    assert plan_jobs("auto", cells=110, cpus=16, memory_gib=None) == (16, 1)
    assert plan_jobs("auto", cells=3, cpus=64) == (3, 21)  # no idle jobs for absent cells
    # a client that needs 2 cores leaves room for half as many jobs
    assert plan_jobs("auto", cells=110, cpus=16, cpus_per_client=2) == (8, 2)
    # 16 cores' workers take 16 * CORE_GIB; what is left pays for whole jobs only
    left = 4 * JOB_GIB + 16 * CORE_GIB + 0.01
    assert plan_jobs("auto", cells=110, cpus=16, memory_gib=left) == (4, 4)
    assert plan_jobs("auto", cells=110, cpus=16, memory_gib=1.0) == (1, 16)  # never 0 jobs
    assert plan_jobs(3, cells=110, cpus=16, memory_gib=1.0) == (3, 5)  # a count is obeyed


def test_jobs_never_hold_more_cores_than_the_machine_gives():
    for cpus in range(1, 33):
        for requested in ["auto", *range(1, cpus + 1)]:
            for per_client, memory in [(0.5, None), (1.0, None), (2.0, None), (1.0, 3.0)]:
                try:
                    jobs, each = plan_jobs(
                        requested, cells=50, cpus=cpus, cpus_per_client=per_client,
                        memory_gib=memory,
                    )
                except ConfigError:
                    assert requested != "auto" and requested * max(per_client, 1) > cpus
                    continue
                assert jobs * each <= cpus
                if jobs > 1:
                    assert each >= max(per_client, 1)


def test_more_jobs_than_cores_is_one_line_error():
    with pytest.raises(ConfigError, match="--jobs 3: this machine gives fedkt 2 cores"):
        plan_jobs(3, cells=10, cpus=2)
    with pytest.raises(ConfigError, match="simulation.num_cpus_per_client"):
        plan_jobs(2, cells=10, cpus=2, cpus_per_client=2)


def test_a_pool_starts_each_job_once_for_all_its_runs(tmp_path, monkeypatch):
    # a comparison's tuning trials and then its test cells: one engine start-up per job
    from tiny import pid_simulator

    from fedkt.config import ExperimentConfig
    from fedkt.parallel import CellTask, JobPool

    starts = tmp_path / "starts"
    monkeypatch.setenv("FEDKT_TEST_ENGINE_STARTS", str(starts))
    tasks = [CellTask(ExperimentConfig(), tmp_path / f"cell{i}", f"cell{i}") for i in range(6)]
    with JobPool(2, 1, pid_simulator, log=lambda m: None) as pool:
        pool.run(tasks[:3])  # the "trials"
        pool.run(tasks[3:])  # the "cells"
        with pool.session():
            pass  # the engine's block ends: the jobs are let go, nothing waits
        with pytest.raises(RuntimeError, match="after close"):
            pool.run(tasks)
    ran = {(tmp_path / f"cell{i}" / "pid").read_text() for i in range(6)}
    engines = starts.read_text().split()
    assert len(engines) == 2 and sorted(engines) == sorted(ran)
    assert not any(job.process.is_alive() for job in pool._running)  # the exit waited


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_jobs_flag_is_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--jobs", value, "--check"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and "Traceback" not in err


def test_oversubscribing_jobs_end_in_one_line(monkeypatch, capsys):
    import fedkt.parallel

    monkeypatch.setattr(fedkt.parallel, "available_cpus", lambda: 2)
    code = main(["compare", "--jobs", "4", "--set", "rounds=1"], simulator=_never)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedkt: error: --jobs 4: this machine gives fedkt 2 cores")


def _never():
    raise AssertionError("nothing may be simulated")


COMPARISON = {
    "name": "par",
    "base": "default",
    "set": [
        "num_clients=4",
        "rounds=2",
        "train.epochs=1",
        "distill.epochs=1",
        "transfer.size=200",
        "evaluation.client_test_size=100",
        "evaluation.global_test_size=200",
    ],
    "strategies": ["knfu", "fedavg"],
    "partitions": [{"name": "dirichlet", "alpha": 0.5}],
    "seeds": [0],
}


def _compare_command(tmp_path: Path, out: str, jobs: str) -> dict:
    spec = tmp_path / "par.yaml"
    spec.write_text(yaml.safe_dump(COMPARISON))
    return dict(
        args=[sys.executable, "-m", "fedkt.server.cli", "compare", str(spec), "--out",
              str(tmp_path / out), "--jobs", jobs],
        text=True,
        # a suite started in the background hands its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _compare(tmp_path: Path, out: str, jobs: str) -> subprocess.CompletedProcess:
    return subprocess.run(**_compare_command(tmp_path, out, jobs), capture_output=True, timeout=600)


def _sigterm_mid_cell(tmp_path: Path, out: str, jobs: str) -> tuple[int, str, float]:
    """Start the comparison and, once a cell has checkpointed a round, SIGTERM its process
    group (as systemd and Kubernetes stop a service). Returns (exit code, stderr, seconds
    from the signal to the exit)."""
    err = tmp_path / f"{out}.stderr"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            **_compare_command(tmp_path, out, jobs),
            stdout=subprocess.DEVNULL,
            stderr=fh,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if any((tmp_path / out).rglob("server.pt")):
                break
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    return code, err.read_text(), time.monotonic() - sent


def _cells(out: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(out)): p.parent for p in out.rglob("summary.json")}


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores for 2 jobs")
def test_cells_in_parallel_jobs_equal_cells_run_in_order(tmp_path):
    # In order, with Python's own Ctrl-C handler (as in a terminal): the engine then runs in
    # a thread, and the cells after the first need the Ray that thread started (regression:
    # the raylet died with the first cell's thread and every later cell's clients failed).
    one = _compare(tmp_path, "one", "1")
    assert one.returncode == 0, one.stderr[-3000:]
    assert "Traceback" not in one.stderr and "ALMA -" not in one.stderr, one.stderr[-3000:]
    two = _compare(tmp_path, "two", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 jobs x" in two.stderr and "(job 1)" in two.stderr
    assert "Traceback" not in two.stderr
    a, b = _cells(tmp_path / "one"), _cells(tmp_path / "two")
    assert sorted(a) == sorted(b) and len(a) == 2
    for cell in a:
        for name in ("metrics.jsonl", "rounds.jsonl"):
            rows = [
                [{k: v for k, v in json.loads(x).items() if k != "wall_seconds"}
                 for x in (d / name).read_text().splitlines()]
                for d in (a[cell], b[cell])
            ]  # fmt: skip
            assert rows[0] == rows[1], (cell, name)
        # each job's Ray instance had its share of the cores, not all of them
        placed = yaml.safe_load((b[cell] / "config.yaml").read_text())["simulation"]
        assert placed["num_cpus"] == len(os.sched_getaffinity(0)) // 2
    # both reports say the same
    assert (tmp_path / "one" / "results.csv").read_text().count("\n") == 3

    # SIGTERM to the whole group mid-cell: jobs and parent stop at once, in one line
    code, err, took = _sigterm_mid_cell(tmp_path, "three", "2")
    assert code == 143 and took < 10, (code, took, err[-3000:])
    assert err.strip().splitlines()[-1].startswith("fedkt: terminated (SIGTERM); finished cells")
    for noise in ("Traceback", "SIGTERM received", "WARNING", "ERROR"):
        assert noise not in err, err[-3000:]
    # ... and the same command again finishes the comparison with the same numbers
    again = _compare(tmp_path, "three", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    c = _cells(tmp_path / "three")
    assert sorted(c) == sorted(a)
    for cell in a:
        rows = [
            [{k: v for k, v in json.loads(x).items() if k != "wall_seconds"}
             for x in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (a[cell], c[cell])
        ]  # fmt: skip
        assert rows[0] == rows[1], cell
