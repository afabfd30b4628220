"""The smallest experiment worth simulating (a few clients on digits, seconds per run), and
small helpers the tests share."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "num_clients=4",
    "rounds=2",
    "train.epochs=2",
    "distill.epochs=1",
    "transfer.size=200",
    "evaluation.client_test_size=100",
    "evaluation.global_test_size=200",
]


def wait_for_a_round(run_dir, timeout: float = 120.0) -> None:
    """Return once the run writing into ``run_dir`` has recorded its first round (or
    ``timeout`` seconds have passed): where the stop tests send their stop, so that it
    lands while clients train the next round."""
    import time

    rounds = Path(run_dir) / "rounds.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rounds.exists() and rounds.read_text().strip():
            return
        time.sleep(0.05)


def in_order(run):
    """A comparison's cell runner (:data:`fedkt.compare.RunCells`) that runs its cells one
    after another with ``run(cfg, cdir)``: what the tests' stand-in simulations need."""
    from fedkt.compare import run_in_order

    return run_in_order(lambda task: run(task.config, task.cdir), lambda m: None)


def load_script(relative: str):
    """A script of the repository (not a package module) imported by its path."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RunsCode:
    """What an attacker would pickle: unpickling it runs ``touch MARKER`` (a test asserts
    the marker never appears)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class ClientNodes:
    """Simulated nodes (partition id -> Flower Context) whose messages go straight to the
    ClientApp's handlers, in this process (needs the ``task_identity`` fixture): what the
    engine would do, without it."""

    def __init__(self, pids):
        from flwr.app import Context, RecordDict

        from fedkt import protocol as P

        self.contexts = {
            pid: Context(
                run_id=1,
                node_id=10 + pid,
                node_config={P.PARTITION_ID: pid},
                state=RecordDict(),
                run_config={},
            )
            for pid in pids
        }

    def send(self, kind, content, pid):
        from flwr.app import Message, MessageType

        from fedkt.clients import app as client_app

        handler = {
            MessageType.QUERY: client_app.handshake,
            MessageType.TRAIN: client_app.train,
            MessageType.EVALUATE: client_app.evaluate,
        }[kind]
        return handler(
            Message(content, dst_node_id=10 + pid, message_type=kind), self.contexts[pid]
        )

    def knowledge_round(self, server_round):
        """Every node trains and shares its knowledge; each then distils the plain mean of
        it and is scored. Returns the evaluate replies' metrics, by node, in order."""
        import numpy as np
        from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, RecordDict

        from fedkt import protocol as P

        config = ConfigRecord({P.SERVER_ROUND: server_round})
        train = RecordDict({P.CONFIG: config})
        shared = [
            self.send(MessageType.TRAIN, train, pid).content[P.KNOWLEDGE] for pid in self.contexts
        ]
        target = np.mean([k[P.VALUES].numpy() for k in shared], axis=0).astype(np.float32)
        content = RecordDict({P.CONFIG: config, P.TARGET: ArrayRecord({P.VALUES: Array(target)})})
        return [
            dict(self.send(MessageType.EVALUATE, content, pid).content[P.METRICS])
            for pid in self.contexts
        ]


class PidSimulate:
    """A stand-in for :class:`fedkt.cli.Simulate` in a job process: each "cell" writes the
    id of the process that ran it, and each engine start-up adds a line to the file named
    by ``FEDKT_TEST_ENGINE_STARTS``."""

    def __call__(self, config, directory, progress, resume=False, plots=True):
        import os

        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "pid").write_text(str(os.getpid()))
        return {"alma": 0.5, "wall_seconds": 0.0}

    def shared(self):
        import contextlib
        import os

        with open(os.environ["FEDKT_TEST_ENGINE_STARTS"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return contextlib.nullcontext()


def pid_simulator():
    """What a job process loads (by name: job processes are spawned, not forked)."""
    return PidSimulate()
