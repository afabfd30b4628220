"""Run an experiment in Flower's simulation engine, in this process.

The ServerApp runs :func:`fedkt.server.loop.run_experiment`; the ClientApp is the very
one that real SuperNodes run (``fedkt.clients.app:app``), with one virtual SuperNode per
client.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import warnings
from contextlib import AbstractContextManager
from typing import Any

import torch

from fedkt.config import ExperimentConfig
from fedkt.data.layout import prepare_layouts
from fedkt.errors import ConfigError, FedktError
from fedkt.experiment import Experiment, resolve
from fedkt.parallel import available_cpus
from fedkt.progress import Progress
from fedkt.results import draw_plots
from fedkt.server.environment import prepare_environment
from fedkt.server.shared_engine import start_ray_here, stop_ray
from fedkt.signals import STOP_SIGNALS, stop_signals_held
from fedkt.training import resolve_device

AUTO_GPU_SHARE = 0.25


def gpu_share(cfg: ExperimentConfig, device: torch.device) -> float:
    """Ray gives a simulated client the GPU only if it reserves a share of one (workers
    without a share see no CUDA device), so training on CUDA needs a share > 0."""
    share = cfg.simulation.num_gpus_per_client
    if share is None:
        return AUTO_GPU_SHARE if device.type == "cuda" else 0.0
    if device.type == "cuda" and share == 0:
        raise ConfigError(
            "simulation.num_gpus_per_client: 0 leaves simulated clients without the GPU that "
            "device asks for"
        )
    return float(share)


class _QuietAfterStop(logging.Filter):
    """Drops Flower's and Ray's log records once the run was interrupted: Flower's message
    threads keep going for a moment and report every worker Ray has already stopped with a
    traceback, and Ray's own code logs some of those deaths as errors (seen in CI, a group
    SIGTERM mid-cell: ``ERROR serialization.py`` with a traceback of an ``assert`` in
    deserialising the actor's death), which would bury the one line that says how to
    resume."""

    #: How long an error record waits for a stop that may be on its way (seconds).
    GRACE = 0.25

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        """Errors wait :attr:`GRACE` for the stop: a signal sent to the whole process group
        (systemd's default) also ends Ray's processes, and an engine thread can see them
        gone, and log it, before the main thread has taken the signal (seen in CI: Flower's
        "actor died ... owner's node has crashed" with a traceback before the stop's one
        line). A stop signal still pending for this process counts as a stop. Only errors
        wait; a run that is not stopping shows them 0.25 s late."""
        if self.stop.is_set():
            return False
        if record.levelno < logging.ERROR:
            return True
        if hasattr(signal, "sigpending") and set(STOP_SIGNALS) & signal.sigpending():
            return False  # not delivered yet: the main thread has not run since it came
        return not self.stop.wait(self.GRACE)


def _log_outlets() -> list[logging.Filterer]:
    """Where Flower's and Ray's records pass: Flower logs on its ``flwr`` logger itself;
    Ray's modules log on loggers below ``ray``, whose own filters never see them, into the
    handlers of the ``ray`` logger (which does not propagate)."""
    return [logging.getLogger("flwr"), *logging.getLogger("ray").handlers]


def _quiet_after(stop: threading.Event) -> _QuietAfterStop:
    """Attach a :class:`_QuietAfterStop` for ``stop`` to every outlet, after removing those
    an interrupted run left behind (its threads are done by now)."""
    for outlet in _log_outlets():
        for left in [f for f in outlet.filters if isinstance(f, _QuietAfterStop)]:
            outlet.removeFilter(left)
    quiet = _QuietAfterStop(stop)
    for outlet in _log_outlets():
        outlet.addFilter(quiet)
    return quiet


def _run_with_interrupts_on_main_thread(
    engine: Any, stop: threading.Event, done: threading.Event
) -> None:
    """Run ``engine()`` in a thread that (with every thread and Ray process it starts)
    blocks the stop signals (SIGINT, SIGTERM), while the main thread waits in short waits;
    ``done`` is set when ``engine()`` has ended.

    A process-directed signal goes to any thread that does not block it. Run on the main
    thread, Flower's engine waits in a thread join; when Ctrl-C landed on one of its
    many other threads, the main thread was not woken and the handler (which sets
    ``stop``) ran only when the whole simulation had finished (seen in CI: a run given
    SIGINT after round 2 completed all its rounds). Here only the main thread can take
    a stop signal, and it is never blocked for more than 0.1 s.

    The main thread waits on a bare lock that the engine thread releases when it ends,
    not in ``Thread.join`` or ``Event.wait``: their Python-level bookkeeping around the
    lock breaks when a stop signal's exception lands inside it. A KeyboardInterrupt in
    ``join`` makes Python 3.11 mark the thread as ended while it still runs (its
    ``_wait_for_tstate_lock`` releases the lock the running thread holds), and a second
    signal in ``Event.wait``'s clean-up raised "release unlocked lock" instead of the
    stop (seen in a test: SIGTERM to the group, then the parent's SIGINT). A bare
    ``acquire`` either takes the lock or raises, with nothing half done. Whoever handles
    the stop waits on ``done``, read without its lock
    (:func:`fedkt.server.shared_engine.stop_ray`)."""
    failure: list[BaseException] = []
    finished = threading.Lock()
    finished.acquire()

    def target() -> None:
        try:
            engine()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failure.append(exc)
        finally:
            done.set()
            finished.release()

    with stop_signals_held():  # the thread, and every thread it starts, inherits the mask
        thread = threading.Thread(target=target, name="fedkt-simulation", daemon=True)
        thread.start()
    try:
        while not finished.acquire(timeout=0.1):
            pass
    except BaseException:
        _set_holding_signals(stop)
        raise
    if failure:
        raise failure[0]


def _set_holding_signals(event: threading.Event) -> None:
    """``event.set()`` that no stop signal interrupts halfway (see
    :func:`fedkt.signals.stop_signals_held`)."""
    with stop_signals_held():
        event.set()


def _ray_init_args(cfg: ExperimentConfig, verbose: bool) -> dict[str, Any]:
    """``ray.init`` arguments: a Ray instance of this machine's cores, or a connection to
    the cluster at ``simulation.ray_address`` (whose nodes then host the clients: Flower
    sizes its actor pool from every node's resources)."""
    common: dict[str, Any] = {"logging_level": "error", "log_to_driver": verbose}
    address = cfg.simulation.ray_address
    if address is not None:
        return {"address": address, **common}
    # "local": always a new instance of this machine, even where `ray start` left a cluster
    # address behind (Ray would otherwise join that cluster, or refuse num_cpus for it).
    cpus = cfg.simulation.num_cpus or available_cpus()
    return {"address": "local", "num_cpus": cpus, "include_dashboard": False, **common}


def simulate(
    cfg: ExperimentConfig | Experiment,
    out_dir: str,
    progress: Progress | None = None,
    verbose: bool = False,
    resume: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Run ``cfg`` with ``cfg.num_clients`` virtual SuperNodes; return the summary.
    ``resume``: continue the run in ``out_dir`` from its last checkpoint; ``plots``:
    draw the run's figures."""
    prepare_environment()
    exp = cfg if isinstance(cfg, Experiment) else resolve(cfg)
    cfg = exp.config
    # Build the data layout here first: a layout the config cannot produce (transfer set too
    # large, a client left without data, ...) is then a one-line error before any worker starts.
    # A layout not cached yet is derived in a process apart, so that this process, alive for
    # the whole run, never holds the partitioning's imports (fedkt.data.layout).
    prepare_layouts([cfg])
    exp.federation()
    device = resolve_device(cfg.device)  # device: cuda without a GPU is a one-line error here
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedkt.clients.app import app as client_app
    from fedkt.server import engine_queues, node_directory
    from fedkt.server.linkstate_index import install as index_messages_by_node
    from fedkt.server.loop import run_experiment

    index_messages_by_node()  # Flower's per-poll scan is quadratic in the number of clients
    engine_queues.install()  # the engine's threads notice the end of a run within 0.1 s, not 1 s
    node_directory.install()  # who is who, from the engine: no handshake with idle clients

    outcome: dict[str, Any] = {}
    server_app = ServerApp()
    # Flower runs the ServerApp in a thread of its own; when the driver is interrupted it
    # must stop too, not rush through the remaining rounds against stopped workers.
    stop = threading.Event()
    engine_done = threading.Event()  # set once Flower's engine has ended (see stop_ray)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["summary"] = run_experiment(
                grid,
                exp,
                out_dir,
                progress,
                resume=resume,
                stopped=stop.is_set,
                plots=False,  # drawn below, once the engine's workers have stopped
                directory=node_directory.directory,
            )
        except BaseException as exc:  # surfaced after the engine has shut down
            outcome["error"] = exc

    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    # Ctrl-C reaches Ray's workers too (one process group): set ``stop`` at once, before
    # Flower's threads start reporting the dead workers, then interrupt as before. SIGTERM
    # (a process manager's stop) is treated the same. Only Python handlers (Python's
    # KeyboardInterrupt for SIGINT, fedkt.signals' for SIGTERM) are wrapped; an ignored or
    # default signal keeps its disposition.
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    on_main = threading.current_thread() is threading.main_thread()
    wrapped = {s: h for s, h in previous.items() if on_main and callable(h)}

    signalled: list[int] = []

    def interrupted(signum: int, frame: Any) -> None:
        # A second signal (SIGTERM to the group, then the parent's SIGINT) can run this
        # handler again *inside* the first one's ``stop.set()``, which holds the event's
        # lock: only the first call sets it.
        if not signalled:
            signalled.append(signum)
            _set_holding_signals(stop)
        handler = wrapped[signal.Signals(signum)]
        assert callable(handler)
        handler(signum, frame)

    if not verbose:
        flwr_logger.setLevel(logging.ERROR)
    backend_config = {
        "client_resources": {
            "num_cpus": cfg.simulation.num_cpus_per_client,
            "num_gpus": gpu_share(cfg, device),
        },
        "init_args": _ray_init_args(cfg, verbose),
    }
    # Ray writes the driver's sys.path into PYTHONPATH for its workers and leaves it there;
    # restore it so later subprocesses of this process import what they would have.
    pythonpath = os.environ.get("PYTHONPATH")
    try:
        # Ray is started here, before the stop handlers: ray.init installs its own SIGTERM
        # handlers (a Python one calling sys.exit and, in its core worker, a C++ one that
        # prints stack dumps and kills the process), which would bypass the clean stop.
        start_ray_here(backend_config, lean=cfg.simulation.ray_address is None)
        quiet = _quiet_after(stop)  # once Ray is up: ray.init gives the ray logger its handler
        for signum in wrapped:
            signal.signal(signum, interrupted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = functools.partial(
                run_simulation,
                server_app=server_app,
                client_app=client_app,
                num_supernodes=cfg.num_clients,
                backend_config=backend_config,
                verbose_logging=verbose,
            )
            if wrapped:
                _run_with_interrupts_on_main_thread(engine, stop, engine_done)
            else:
                try:
                    engine()
                finally:
                    engine_done.set()
    except BaseException as exc:
        # (the filter stays: Flower's threads may still log; the next run removes it)
        _set_holding_signals(stop)
        if isinstance(exc, KeyboardInterrupt):
            stop_ray(engine_done)
        raise
    else:
        for outlet in _log_outlets():
            outlet.removeFilter(quiet)
    finally:
        for signum, handler in wrapped.items():
            signal.signal(signum, handler)  # (drops Ray's SIGTERM handlers as well)
        flwr_logger.setLevel(old_level)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise FedktError("the simulation ended without results (see the log above)")
    if plots:
        draw_plots(out_dir, cfg.name)
    return outcome["summary"]


class SimulationEngine:
    """:func:`simulate` plus :meth:`shared`: what the command line is given to run
    experiments (see :class:`fedkt.cli.Simulate`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return simulate(*args, **kwargs)

    def shared(self) -> AbstractContextManager[None]:
        """Successive simulations share one Ray instance and its warm worker actors."""
        from fedkt.server.shared_engine import shared_engine

        return shared_engine()
