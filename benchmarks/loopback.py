"""A real deployment on one machine, driven by the scripts in deploy/scripts: a SuperLink
with TLS and SuperNode authentication and N authenticated SuperNodes over gRPC
(grpc-rere) on distinct ports with distinct partitions. Used by ``tests/test_deploy.py``
and ``benchmarks/deployed.py``. Every process is started here and stopped by PID on
exit (with the children Flower and the scripts spawn); what is left running is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.flwr_runs import flwr_run_to_end, run_record, run_status
from benchmarks.processes import alive, children, processes_mentioning, start_time, stop_tree

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "deploy" / "scripts"
CONNECTION = "fedkt-loopback"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


class MissingTools(RuntimeError):
    """openssl or ssh-keygen is not installed (scripts/system-deps.sh installs them)."""


@dataclass
class Deployment:
    tmp: Path
    env: dict[str, str]
    fleet: int
    certs: Path
    keys: Path
    logs: Path
    superlink: subprocess.Popen
    #: starts SuperNode i (its key, partition and data folder) on a local port
    start_node: Callable[[int, int], subprocess.Popen]
    nodes: list[subprocess.Popen] = field(default_factory=list)
    spare_ports: list[int] = field(default_factory=list)
    connection: str = CONNECTION

    def node_log(self, i: int) -> Path:
        """The log of SuperNode ``i``'s latest start (``node{i}.log``, ``node{i}-2.log``...)."""
        starts = [p for p in self.logs.glob(f"node{i}-*.log") if p.stem.split("-")[1].isdigit()]
        if not starts:
            return self.logs / f"node{i}.log"
        return max(starts, key=lambda p: int(p.stem.split("-")[1]))

    def activated(self, i: int, node: subprocess.Popen, timeout: float = 120) -> bool:
        """Wait until the SuperLink has activated SuperNode ``i`` (started as ``node``:
        its log names its node ID) or refused it (the process exits). Waits on the event,
        not on a fixed time: a node's start takes seconds on a loaded machine."""
        log = self.node_log(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and "SuperNode ID:" in log.read_text(errors="replace"):
                return True
            if node.poll() is not None:
                return False
            time.sleep(0.2)
        raise AssertionError(f"SuperNode {i} neither activated nor refused in {timeout:.0f} s")

    def run(self, *cmd: Any, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=120, **kw
        )

    def flwr_run(
        self, overrides: str, out: Path, timeout: float = 600, resume: bool = False
    ) -> subprocess.CompletedProcess:
        """``flwr run --stream`` of this repository's app with ``overrides``
        (comma-separated KEY=VALUE), results written to ``out`` (``resume``: continue the
        run whose checkpoint is there). Returns once the run has finished, with its whole
        log in ``stdout`` (``benchmarks.flwr_runs``)."""
        config = f"overrides='{overrides}' out='{out}'" + (" resume=true" if resume else "")
        return flwr_run_to_end(config, self.connection, self.env, ROOT, timeout)

    def status(self, run_id: str) -> str:
        """The run's status as ``flwr ls`` gives it (``running``, ``finished:completed``...)."""
        return run_status(run_id, self.connection, self.env)

    def run_record(self, run_id: str) -> dict[str, Any]:
        """The run as ``flwr ls`` gives it, ``status-details`` included."""
        return run_record(run_id, self.connection, self.env)

    def superlink_log(self, tail: int = 8000) -> str:
        """The end of the SuperLink's log (what a failed assertion should show)."""
        return (self.logs / "superlink.log").read_text(errors="replace")[-tail:]


@contextmanager
def loopback_deployment(
    tmp_path: Path,
    nodes: int = 3,
    warm: bool = True,
    data_dir: Path | None = None,
    database: str | None = None,
) -> Iterator[Deployment]:
    """Start the deployment in ``tmp_path``; ``warm``: SuperNodes run their ClientApps in
    one warm ``fedkt-clientapp-worker`` each (False: Flower's process per message);
    ``data_dir``: where every node reads dataset files (default: a folder of its own);
    ``database``: the SuperLink's state (``DATABASE`` of deploy/scripts/superlink.sh;
    default: that script's, a file)."""
    if shutil.which("openssl") is None or shutil.which("ssh-keygen") is None:
        raise MissingTools("needs openssl and ssh-keygen (scripts/system-deps.sh)")
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "WARM_CLIENTAPP": "1" if warm else "0",
        # N SuperNodes, the SuperLink and its ServerApp share this machine's cores: one
        # torch thread each (as a simulation's Ray workers have), or their OpenMP threads
        # spin against each other (measured: a 0.2 s digits message took 4-5 s).
        "OMP_NUM_THREADS": "1",
    }
    fleet, control, *node_ports = free_ports(2 + nodes + 3)  # 3 spare ports
    certs, keys, logs = tmp_path / "certs", tmp_path / "keys", tmp_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []

    def run(*cmd: Any) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=120
        )

    def start(name: str, *cmd: Any, **extra_env: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                [str(c) for c in cmd],
                env={**env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        return proc

    try:
        made = run(SCRIPTS / "make-certs.sh", certs, "127.0.0.1", "localhost")
        assert made.returncode == 0, made.stderr
        for i in range(nodes + 1):  # the last key is made but never registered
            assert run(SCRIPTS / "make-node-key.sh", keys, f"node{i}").returncode == 0
        superlink = start(
            "superlink",
            SCRIPTS / "superlink.sh",
            certs,
            FLEET_ADDRESS=f"127.0.0.1:{fleet}",
            CONTROL_HOST="127.0.0.1",
            CONTROL_PORT=str(control),
            **({"DATABASE": database} if database else {}),
        )
        log = logs / "superlink.log"
        wait_for(
            lambda: (
                "Uvicorn running" in log.read_text() and "Starting Fleet API" in log.read_text()
            ),
            60,
            "the SuperLink",
        )
        connect = run(
            SCRIPTS / "connection.sh", CONNECTION, f"127.0.0.1:{control}", certs / "ca.crt"
        )
        assert connect.returncode == 0, connect.stderr
        reg = run(
            SCRIPTS / "register-nodes.sh",
            CONNECTION,
            *[keys / f"node{i}.key.pub" for i in range(nodes)],
        )
        assert reg.returncode == 0, reg.stdout + reg.stderr
        launched = Counter[int]()

        def start_node(i: int, port: int) -> subprocess.Popen:
            """SuperNode ``i`` (again, after it died: a log of its own per start)."""
            launched[i] += 1
            return start(
                f"node{i}" if launched[i] == 1 else f"node{i}-{launched[i]}",
                SCRIPTS / "supernode.sh",
                f"127.0.0.1:{fleet}",
                certs / "ca.crt",
                keys / f"node{i}.key",
                i,
                data_dir or tmp_path / f"data{i}",
                CLIENTAPPIO_PORT=str(port),
            )

        deployment = Deployment(
            tmp_path,
            env,
            fleet,
            certs,
            keys,
            logs,
            superlink,
            start_node,
            spare_ports=node_ports[nodes:],
        )
        deployment.nodes = [start_node(i, node_ports[i]) for i in range(nodes)]

        def online() -> bool:
            out = run("flwr", "supernode", "list", CONNECTION, "--format", "json")
            if out.returncode != 0:
                return False
            listed = json.loads(out.stdout).get("nodes", [])
            return sum(1 for n in listed if n.get("status") == "online") == nodes

        wait_for(online, 90, f"{nodes} SuperNodes online", step=2)
        yield deployment
    finally:
        _stop(started, home)


def _stop(started: list[subprocess.Popen], home: Path) -> None:
    # Collect every descendant first: Flower's superexec processes and fedkt's ClientApp
    # workers outlive their parents for a moment (they watch --parent-pid).
    pids = [p.pid for p in started]
    tree = set(pids)
    for pid in pids:
        tree.update(children(pid))
        tree.update(processes_mentioning(f"--parent-pid {pid}"))
    born = {pid: start_time(pid) for pid in tree}
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stopped = stop_tree(sorted(tree | set(processes_mentioning(str(home)))))
    left = [
        pid
        for pid, started_at in {**stopped, **born}.items()
        if started_at is not None and alive(pid, started_at)
    ]
    assert not left, f"processes left running: {left}"
