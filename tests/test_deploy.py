"""A real deployment on loopback, driven by the scripts in deploy/scripts: a SuperLink with
TLS and SuperNode authentication, three authenticated SuperNodes over gRPC (grpc-rere) on
distinct ports with distinct partitions, and a two-round KnFu experiment started with
``flwr run``. Also: a SuperNode whose key was never registered is refused, and one
without the CA certificate cannot connect. Every process is started here and stopped by
PID at the end (with the children Flower spawns)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive, children, processes_mentioning, start_time, stop_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "deploy" / "scripts"
NODES = 3


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _established_to(port: int, pid: int) -> bool:
    """Whether process ``pid`` holds an established TCP connection to ``port`` (IPv4 or 6)."""
    inodes = _socket_inodes(pid)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                return True
    return False


def _run_node(
    cmd: list[str], env: dict[str, str], log: Path, timeout: float = 90
) -> tuple[int, str]:
    """Run a SuperNode to its end; its superexec child shares its process group and is
    stopped with it (it would otherwise hold the output pipe open)."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return code, log.read_text()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("deploy")
    if shutil.which("openssl") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs openssl and ssh-keygen")
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    fleet, control, *node_ports = _free_ports(2 + NODES + 2)
    certs, keys, logs = tmp_path / "certs", tmp_path / "keys", tmp_path / "logs"
    logs.mkdir()

    def run(*cmd, **kw):
        return subprocess.run(
            [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=120, **kw
        )

    started: list[subprocess.Popen] = []

    def start(name: str, *cmd, **extra_env) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            env={**env, **extra_env},
            stdout=open(logs / f"{name}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    try:
        assert run(SCRIPTS / "make-certs.sh", certs, "127.0.0.1", "localhost").returncode == 0
        for i in range(NODES + 1):  # node3's key is made but never registered
            assert run(SCRIPTS / "make-node-key.sh", keys, f"node{i}").returncode == 0
        superlink = start(
            "superlink",
            SCRIPTS / "superlink.sh",
            certs,
            FLEET_ADDRESS=f"127.0.0.1:{fleet}",
            CONTROL_HOST="127.0.0.1",
            CONTROL_PORT=str(control),
        )
        log = logs / "superlink.log"
        _wait_for(
            lambda: (
                "Uvicorn running" in log.read_text() and "Starting Fleet API" in log.read_text()
            ),
            60,
            "the SuperLink",
        )
        assert (
            run(
                SCRIPTS / "connection.sh", "fedkt-test", f"127.0.0.1:{control}", certs / "ca.crt"
            ).returncode
            == 0
        )
        reg = run(
            SCRIPTS / "register-nodes.sh",
            "fedkt-test",
            *[keys / f"node{i}.key.pub" for i in range(NODES)],
        )
        assert reg.returncode == 0, reg.stdout + reg.stderr
        nodes = [
            start(
                f"node{i}",
                SCRIPTS / "supernode.sh",
                f"127.0.0.1:{fleet}",
                certs / "ca.crt",
                keys / f"node{i}.key",
                i,
                tmp_path / f"data{i}",
                CLIENTAPPIO_PORT=str(node_ports[i]),
            )
            for i in range(NODES)
        ]

        def online():
            out = run("flwr", "supernode", "list", "fedkt-test", "--format", "json")
            if out.returncode != 0:
                return False
            listed = json.loads(out.stdout).get("nodes", [])
            return sum(1 for n in listed if n.get("status") == "online") == NODES

        _wait_for(online, 90, f"{NODES} SuperNodes online", step=2)
        yield {
            "run": run,
            "env": env,
            "tmp": tmp_path,
            "fleet": fleet,
            "certs": certs,
            "keys": keys,
            "superlink": superlink,
            "nodes": nodes,
            "logs": logs,
            "spare_ports": node_ports[NODES:],
        }
    finally:
        # Collect every descendant first: Flower's superexec processes outlive their parents.
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
            for pid, started in {**stopped, **born}.items()
            if started is not None and alive(pid, started)
        ]
        assert not left, f"processes left running: {left}"


def test_secure_deployment_runs_knfu_over_grpc(deployment):
    d = deployment
    out = d["tmp"] / "results"
    overrides = (
        "rounds=2,num_clients=3,wait_for_nodes=60,train.epochs=1,distill.epochs=1,"
        "evaluation.client_test_size=100"
    )
    proc = subprocess.run(
        [
            "flwr",
            "run",
            ".",
            "fedkt-test",
            "--stream",
            "--run-config",
            f"overrides='{overrides}' out='{out}'",
        ],
        cwd=ROOT,
        env=d["env"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = re.search(r"started run (\d+)", proc.stdout).group(1)
    status = json.loads(
        d["run"]("flwr", "ls", "fedkt-test", "--run-id", run_id, "--format", "json").stdout
    )
    assert "finished:completed" in json.dumps(status), status
    # results in the same form as a simulation's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "knfu" and summary["rounds"] == 2 and summary["num_clients"] == 3
    assert 0.0 < summary["alma"] <= 1.0 and summary["bytes_up"] > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (
        sorted({r["client"] for r in rows}) == [0, 1, 2] and len(rows) == 6
    )  # distinct partitions
    for name in ("config.yaml", "rounds.jsonl", "fusion_weights.jsonl", "accuracy.png"):
        assert (out / name).exists(), name
    # the SuperNodes talk gRPC (grpc-rere) to the Fleet API
    assert "Starting Fleet API (gRPC-rere)" in (d["logs"] / "superlink.log").read_text()
    for node in d["nodes"]:
        assert node.poll() is None
        assert _established_to(d["fleet"], node.pid), (
            f"SuperNode {node.pid} has no gRPC connection to the Fleet API"
        )


def test_unregistered_node_and_node_without_ca_are_refused(deployment):
    d = deployment
    fleet = f"127.0.0.1:{d['fleet']}"
    env = {**d["env"], "CLIENTAPPIO_PORT": str(d["spare_ports"][0]), "MAX_RETRIES": "2"}
    code, text = _run_node(
        [
            str(SCRIPTS / "supernode.sh"),
            fleet,
            str(d["certs"] / "ca.crt"),
            str(d["keys"] / "node3.key"),
            "3",
        ],
        env,
        d["logs"] / "unregistered.log",
    )
    assert code != 0 and "Failed to activate SuperNode" in text, text[-2000:]
    # A node that does not trust our CA (system certificates only) fails the TLS handshake.
    code, text = _run_node(
        [
            "flower-supernode",
            "--grpc-rere",
            "--superlink",
            fleet,
            "--auth-supernode-private-key",
            str(d["keys"] / "node0.key"),
            "--node-config",
            "partition-id=0",
            "--port",
            str(d["spare_ports"][1]),
            "--max-retries",
            "2",
            "--max-wait-time",
            "20",
        ],
        d["env"],
        d["logs"] / "no-ca.log",
    )
    assert code != 0, text[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in text or "handshake" in text.lower()
