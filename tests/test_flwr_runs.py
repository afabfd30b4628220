"""benchmarks.flwr_runs against a stand-in ``flwr`` on PATH: a run is returned only once
its SuperLink says it has finished, even when ``flwr run --stream`` ends first (its log is
followed again meanwhile), and its record carries the status details that say why a run
failed."""

import json
import os
import sys
import warnings

import pytest

from benchmarks.flwr_runs import StreamEndedEarly, flwr_run_to_end, run_record, run_status

FAKE = r'''#!{python}
"""A stand-in for Flower's CLI. State in $FAKE_STATE: the run's exit code and the
number of `flwr log` calls after which the run counts as finished."""
import json, os, sys, time
path = os.environ["FAKE_STATE"]
state = json.load(open(path))
args = sys.argv[1:]
state["calls"].append(args)
if args[0] == "run":
    print("Successfully started run 42" if state["run_rc"] == 0 else "Error: no SuperLink")
    code = state["run_rc"]
elif args[0] == "ls":
    if state["ls_garbage"]:
        print("not json")
    else:
        done = len([c for c in state["calls"] if c[0] == "log"]) >= state["finish_after_logs"]
        status = "finished:completed" if done else "starting"
        run = {{"run-id": args[args.index("--run-id") + 1], "status": status,
               "status-details": "" if done else "waiting"}}
        print(json.dumps({{"success": True, "runs": [run]}}))
    code = 0
else:  # log
    json.dump(state, open(path, "w"))
    time.sleep(state["log_seconds"])
    print(f"stream {{len([c for c in state['calls'] if c[0] == 'log'])}}: round 1 done")
    code = 0
json.dump(state, open(path, "w"))
sys.exit(code)
'''


@pytest.fixture
def fake_flwr(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    flwr = bin_dir / "flwr"
    flwr.write_text(FAKE.format(python=sys.executable))
    flwr.chmod(0o755)
    state = tmp_path / "state.json"

    def env(**state_values) -> dict[str, str]:
        values = {
            "run_rc": 0,
            "finish_after_logs": 0,
            "ls_garbage": False,
            "log_seconds": 0,
            "calls": [],
        }
        state.write_text(json.dumps({**values, **state_values}))
        return {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_STATE": str(state),
        }

    def calls() -> list[list[str]]:
        return json.loads(state.read_text())["calls"]

    return env, calls


def test_a_stream_that_ends_before_the_run_is_followed_until_the_run_has_finished(
    fake_flwr, tmp_path
):
    env, calls = fake_flwr
    with pytest.warns(StreamEndedEarly, match="ended while run 42 was starting"):
        proc = flwr_run_to_end("out='x'", "conn", env(finish_after_logs=2), tmp_path, 60)
    assert proc.returncode == 0
    assert "started run 42" in proc.stdout and proc.stdout.endswith("stream 2: round 1 done\n")
    assert "stream 1" not in proc.stdout  # only the last stream: each one is the whole log
    kinds = [c[0] for c in calls()]
    assert kinds == ["run", "ls", "log", "ls", "log", "ls"]
    assert calls()[0] == ["run", ".", "conn", "--stream", "--run-config", "out='x'"]
    assert calls()[2] == ["log", "42", "conn", "--stream"]


def test_a_run_already_finished_is_not_followed_and_no_connection_means_the_default(
    fake_flwr, tmp_path
):
    env, calls = fake_flwr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no StreamEndedEarly
        proc = flwr_run_to_end("out='x'", None, env(finish_after_logs=0), tmp_path, 60)
    assert proc.stdout == "Successfully started run 42\n"
    assert calls() == [
        ["run", ".", "--stream", "--run-config", "out='x'"],
        ["ls", "--run-id", "42", "--format", "json"],
    ]


def test_a_failed_start_is_returned_as_it_is(fake_flwr, tmp_path):
    env, calls = fake_flwr
    proc = flwr_run_to_end("out='x'", "conn", env(run_rc=1), tmp_path, 60)
    assert proc.returncode == 1 and "no SuperLink" in proc.stdout
    assert [c[0] for c in calls()] == ["run"]


def test_a_run_that_never_finishes_fails_at_the_timeout(fake_flwr, tmp_path):
    env, _ = fake_flwr
    with (
        pytest.raises(AssertionError, match="run 42 has not finished in 3 s"),
        pytest.warns(StreamEndedEarly),
    ):
        flwr_run_to_end("out='x'", "conn", env(finish_after_logs=10**6), tmp_path, 3)


def test_a_stream_that_outlasts_the_timeout_fails_the_same_way(fake_flwr, tmp_path):
    env, _ = fake_flwr
    with (
        pytest.raises(AssertionError, match="run 42 has not finished in 3 s"),
        pytest.warns(StreamEndedEarly),
    ):
        flwr_run_to_end("out='x'", "conn", env(finish_after_logs=1, log_seconds=30), tmp_path, 3)


def test_the_record_carries_the_status_details(fake_flwr):
    env, _ = fake_flwr
    record = run_record("42", "conn", env(finish_after_logs=1))
    assert record == {"run-id": "42", "status": "starting", "status-details": "waiting"}


def test_an_unreadable_status_names_what_flwr_ls_said(fake_flwr, tmp_path):
    env, _ = fake_flwr
    with pytest.raises(AssertionError, match="flwr ls --run-id 42 said: not json"):
        run_status("42", "conn", env(ls_garbage=True))
