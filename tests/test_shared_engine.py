"""One engine start-up for many simulations, and simulations on a Ray cluster: a cell's
results must not depend on whether its workers were fresh, warm, or on other nodes."""

import json
import sys

import pytest

from fedkt.server.shared_engine import shared_engine, shared_pool_builds
from fedkt.server.simulation import simulate

pytestmark = pytest.mark.slow

TIMING = ("wall_seconds",)


def _lines(path):
    """A results file's lines without wall-clock fields (everything else must match)."""
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in path.read_text().splitlines()
    ]


def _same_results(a, b):
    for name in ("metrics.jsonl", "rounds.jsonl", "fusion_weights.jsonl"):
        assert _lines(a / name) == _lines(b / name), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("alma", "alma_per_round", "local_alma", "global_accuracy", "steps_per_round"):
        assert sa[key] == sb[key], key


@pytest.fixture(scope="module")
def alone(tmp_path_factory, tiny_cfg_module):
    out = tmp_path_factory.mktemp("alone")
    simulate(tiny_cfg_module("strategy=knfu"), str(out))
    return out


@pytest.fixture(scope="module")
def tiny_cfg_module():
    from tiny import TINY

    from fedkt.config import load_config

    return lambda *o: load_config(None, TINY + list(o))


def test_cells_in_a_shared_engine_equal_cells_run_alone(alone, tmp_path, tiny_cfg_module):
    import ray

    from fedkt.server import shared_engine as engine

    before = shared_pool_builds()
    with shared_engine():
        simulate(tiny_cfg_module("strategy=fedavg"), str(tmp_path / "other"))
        simulate(tiny_cfg_module("strategy=knfu"), str(tmp_path / "warm"))
        assert ray.is_initialized()  # kept between the two simulations
        # The workers served both cells without importing pyarrow or starlette (Ray's
        # add-ons for them are skipped where unused: fedkt.server.ray_addons) or
        # scikit-learn (the digits split is stored once and memory-mapped).
        pool = engine._STATE.pool
        probe = lambda _actor: [m for m in ("pyarrow", "starlette", "sklearn") if m in sys.modules]  # noqa: E731
        assert ray.get([a.__ray_call__.remote(probe) for a in pool.pool]) == [[]] * len(pool.pool)
        # a local instance without the daemons no simulation uses (fedkt.server.lean_ray)
        from ray._private import ray_constants, worker

        started = set(worker._global_node.all_processes)
        assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= started
        unused = {
            ray_constants.PROCESS_TYPE_MONITOR,
            ray_constants.PROCESS_TYPE_DASHBOARD,
            ray_constants.PROCESS_TYPE_LOG_MONITOR,
        }
        assert not started & unused
    assert shared_pool_builds() == before + 1  # one pool of workers served both cells
    assert not ray.is_initialized()  # and the block stopped what it started
    _same_results(alone, tmp_path / "warm")


def test_a_cell_on_ray_with_every_daemon_equals_the_lean_instance(
    alone, tmp_path, tiny_cfg_module, monkeypatch
):
    """The daemons fedkt leaves out of a local Ray instance change nothing in the results:
    the same cell on a Ray started by ``ray.init`` as it is (monitor, API server and log
    monitor running) gives the lean instance's numbers bit for bit."""
    from ray._private import ray_constants, worker

    from fedkt.server import lean_ray

    monkeypatch.setattr(lean_ray, "_lean_node_class", lambda: None)
    seen: list[set] = []
    import fedkt.server.loop as loop

    run_experiment = loop.run_experiment

    def looking(*args, **kwargs):  # while the simulation runs: which daemons are up
        seen.append(set(worker._global_node.all_processes))
        return run_experiment(*args, **kwargs)

    monkeypatch.setattr(loop, "run_experiment", looking)
    simulate(tiny_cfg_module("strategy=knfu"), str(tmp_path / "full"))
    assert ray_constants.PROCESS_TYPE_MONITOR in seen[0]  # Ray as ray.init starts it
    assert ray_constants.PROCESS_TYPE_LOG_MONITOR in seen[0]
    _same_results(alone, tmp_path / "full")


def test_a_library_caller_goes_on_after_a_stop(alone, tmp_path, tiny_cfg_module, monkeypatch):
    """Ctrl-C in a notebook: ``simulate`` raises KeyboardInterrupt, Ray's processes are
    ended, and the caller's process must stay usable. Ray's driver ends the whole process
    (status 1, no message) when one of its threads finds the raylet gone, e.g. an engine
    thread fetching a client's reply, and 60 s after its GCS has gone: so the stop lands
    while clients are training, and the driver must have let go of Ray *before* Ray's
    processes end, with no engine thread left to make a Ray call (once, in CI, the suite
    itself was ended here). The next simulation must then start afresh."""
    import os
    import signal
    import threading
    import time

    import ray
    from tiny import wait_for_a_round

    from fedkt.server import shared_engine as engine

    first = tmp_path / "stopped"
    seen: dict[str, object] = {}
    real_end_actors, real_shutdown = engine.end_actors, ray.shutdown

    def end_actors() -> None:
        seen["in flight"] = sum(len(p._future_to_actor) for p in list(engine._STATE.pools))
        real_end_actors()

    def shutdown(*args, **kwargs) -> None:
        names = [t.name for t in threading.enumerate() if t.is_alive()]
        seen.setdefault("engine at shutdown", "fedkt-simulation" in names)
        real_shutdown(*args, **kwargs)

    def no_kill(procs) -> int:
        raise AssertionError("Ray's processes were killed under a connected driver")

    monkeypatch.setattr(engine, "end_actors", end_actors)
    monkeypatch.setattr(ray, "shutdown", shutdown)
    monkeypatch.setattr(engine, "kill", no_kill)

    def interrupt_after_round_one() -> None:
        """Once round 1 is recorded and round 2's calls are out: between the two (the
        server's checkpoint, the next sampling) a stop found no call in flight, once in
        CI, and then tested less than it means to."""
        wait_for_a_round(first)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            p._future_to_actor for p in list(engine._STATE.pools)
        ):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, as in a notebook or terminal: a suite started in the
    # background (`cmd &` in a CI script) runs with SIGINT ignored, and then no signal
    # would reach the run at all
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_after_round_one, daemon=True).start()
        # 20 rounds of 50 epochs: the stop lands while clients train
        with pytest.raises(KeyboardInterrupt):
            simulate(tiny_cfg_module("strategy=knfu", "rounds=20", "train.epochs=50"), str(first))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen["in flight"]  # the stop did land on calls in flight
    assert seen["engine at shutdown"] is False  # Flower's engine had ended before it
    assert engine._STATE.disconnecting is None  # nothing left behind to disconnect
    assert not ray.is_initialized()  # the driver no longer waits on the dead GCS
    monkeypatch.undo()
    simulate(tiny_cfg_module("strategy=knfu"), str(tmp_path / "again"))
    _same_results(alone, tmp_path / "again")
    # the stopped run's log filter (it drops Flower's records once a run is stopped) went
    # with the next run: left in place, it silenced Flower's logger for good
    import logging

    from fedkt.server.simulation import _QuietAfterStop

    for outlet in (logging.getLogger("flwr"), *logging.getLogger("ray").handlers):
        assert not [f for f in outlet.filters if isinstance(f, _QuietAfterStop)], outlet


def test_a_stop_that_finds_the_raylet_gone_lets_a_library_caller_go_on(alone, tmp_path):
    """stop_ray's fallback: a Ctrl-C sent to the whole process group (a terminal's) can
    take Ray's raylet down before the stop reaches fedkt. Then the driver cannot let go of
    Ray before Ray's processes end; they are killed at once and the driver disconnects on
    a thread of its own (~5 s against a dead GCS), which the next simulation waits for.
    The caller's process must survive it: no ``QuickExit`` from a driver thread, and no
    end once Ray's GCS reconnect timeout has passed (a driver left connected to the dead
    GCS). Run in a process of its own, so that a regression ends that process and not the
    suite; the timeout is shortened (60 s -> 15 s, still three times the disconnect) and
    the process outlives it before it exits."""
    import os
    import subprocess

    from tiny import ROOT

    env = {
        **os.environ,
        "RAY_gcs_rpc_server_reconnect_timeout_s": "15",
        "FEDKT_TEST_LINGER": "20",
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "stop_with_raylet_gone.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "stopped"
    assert report["killed"], "the fallback was not taken: Ray's processes were not killed"
    assert not report["ray_initialized"] and not report["disconnecting"]
    _same_results(alone, tmp_path / "again")


def test_after_a_stop_the_engine_makes_no_call_into_ray(monkeypatch):
    """Once stop_ray has run, Flower's engine thread ending the simulation (the backend's
    ``terminate``) must neither end actors nor shut Ray down: stop_ray's own thread
    disconnects, and a call racing it left a GCS client that ended the process 60 s later."""
    import ray

    from fedkt.server import shared_engine as engine

    class Pool:
        def terminate_all_actors(self):
            raise AssertionError("actors ended after the stop")

    def no_shutdown(*a, **k):
        raise AssertionError("ray.shutdown called after the stop")

    monkeypatch.setattr(ray, "shutdown", no_shutdown)
    monkeypatch.setattr(engine._STATE, "stopping", True)
    backend = object.__new__(engine._backend_class())  # (no Ray needed for terminate)
    backend.pool = Pool()
    backend.terminate()
    monkeypatch.setattr(engine._STATE, "stopping", False)
    with pytest.raises(AssertionError, match="actors ended"):  # and otherwise it does end them
        backend.terminate()


def test_once_stopped_ray_errors_are_quiet_as_flowers():
    """After a stop, Ray's own error records about the workers it lost (logged by modules
    below the ``ray`` logger, into its handlers) are dropped like Flower's; before it they
    pass, and a later run's filter replaces a stopped run's."""
    import io
    import logging
    import threading

    from fedkt.server.simulation import _quiet_after, _QuietAfterStop

    ray_logger = logging.getLogger("ray")
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    ray_logger.addHandler(handler)
    try:
        stop = threading.Event()
        first = _quiet_after(stop)
        deep = logging.getLogger("ray._private.serialization")
        deep.error("before the stop")
        logging.getLogger("flwr").error("flower before the stop")
        stop.set()
        deep.error("after the stop")
        assert "before the stop" in seen.getvalue()
        assert "after the stop" not in seen.getvalue()
        second = _quiet_after(threading.Event())  # the next run
        for outlet in (logging.getLogger("flwr"), handler):
            quiet = [f for f in outlet.filters if isinstance(f, _QuietAfterStop)]
            assert quiet == [second] and first not in quiet
        deep.error("next run")
        assert "next run" in seen.getvalue()
    finally:
        ray_logger.removeHandler(handler)
        for outlet in (logging.getLogger("flwr"), *ray_logger.handlers):
            for f in [f for f in outlet.filters if isinstance(f, _QuietAfterStop)]:
                outlet.removeFilter(f)


def test_an_error_logged_just_before_the_stop_is_quiet_too():
    """A group SIGTERM ends Ray's processes while the main thread is taking the signal: an
    engine thread's error about them, logged a moment before the stop is set, waits for it
    and is dropped; without a stop it is shown, and records below ERROR never wait."""
    import logging
    import threading

    from fedkt.server.simulation import _QuietAfterStop

    stop = threading.Event()
    quiet = _QuietAfterStop(stop)

    def record(level: int) -> logging.LogRecord:
        return logging.LogRecord("flwr", level, __file__, 1, "actor died", None, None)

    assert quiet.filter(record(logging.INFO))
    assert quiet.filter(record(logging.ERROR))  # no stop came within the grace
    threading.Timer(0.05, stop.set).start()
    assert not quiet.filter(record(logging.ERROR))  # the stop came 50 ms later
    assert not quiet.filter(record(logging.INFO))


def test_a_cell_on_a_two_node_ray_cluster_equals_the_single_node_run(
    alone, tmp_path, tiny_cfg_module
):
    import ray
    from ray._private.state import actors
    from ray.cluster_utils import Cluster

    from fedkt.server import shared_engine as engine

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = tiny_cfg_module("strategy=knfu", f"simulation.ray_address={cluster.address}")
        with shared_engine():  # keeps the actor pool alive to inspect its placement
            simulate(cfg, str(tmp_path / "cluster"))
            pool = engine._STATE.pool
            nodes = {actors(actor_id=a._actor_id.hex())["Address"]["NodeID"] for a in pool.pool}
            assert pool.num_actors == 2 and len(nodes) == 2  # one worker on each node
            assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
        _same_results(alone, tmp_path / "cluster")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
