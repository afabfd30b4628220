"""A library caller stopped by a Ctrl-C that reached Ray's raylet first (the whole process
group got it), then going on: what ``test_shared_engine`` runs in a process of its own.

Usage: ``python tests/stop_with_raylet_gone.py OUT``. It prints one JSON line saying what
the stop did, runs the tiny KnFu experiment again into ``OUT/again``, and then waits
``FEDKT_TEST_LINGER`` seconds, so that a driver left connected to Ray's dead GCS (which
ends the process once Ray's GCS reconnect timeout has passed) ends it before it exits 0.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny import TINY, wait_for_a_round  # noqa: E402

from fedkt.config import load_config  # noqa: E402
from fedkt.server import shared_engine as engine  # noqa: E402
from fedkt.server.simulation import simulate  # noqa: E402


def main(out: Path) -> None:
    import ray
    from ray._private import ray_constants, worker

    stopped = out / "stopped"
    killed: list[int] = []
    kill = engine.kill

    def counting_kill(procs):  # type: ignore[no-untyped-def]
        killed.append(len(procs))
        return kill(procs)

    engine.kill = counting_kill

    def process_group_ctrl_c() -> None:
        """Once a round is done and clients train the next: the raylet dies first, then
        this process gets its SIGINT (a terminal's Ctrl-C reaches the whole group)."""
        wait_for_a_round(stopped)
        raylet = worker._global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0]
        os.kill(raylet.process.pid, signal.SIGKILL)
        raylet.process.wait()
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=process_group_ctrl_c, daemon=True).start()
    cfg = lambda *o: load_config(None, [*TINY, *o])  # noqa: E731
    outcome = "ran to its end"
    try:
        with engine.shared_engine():
            simulate(cfg("strategy=knfu", "rounds=20", "train.epochs=50"), str(stopped))
    except KeyboardInterrupt:
        outcome = "stopped"
    simulate(cfg("strategy=knfu"), str(out / "again"))
    report = {
        "outcome": outcome,
        "killed": killed,
        "ray_initialized": ray.is_initialized(),
        "disconnecting": engine._STATE.disconnecting is not None,
    }
    print(json.dumps(report), flush=True)
    time.sleep(float(os.environ.get("FEDKT_TEST_LINGER", "0")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
