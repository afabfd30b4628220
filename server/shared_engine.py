"""One simulation engine for many simulations: Ray and its worker actors started once.

Flower's simulation engine (``flwr.simulation.run_simulation``) starts Ray, creates one
actor per client slot, and at the end of every simulation kills the actors and shuts
Ray down. A comparison is dozens of short simulations, and each paid that start-up:
starting Ray, and in every new actor importing torch, building the dataset and
resolving the experiment (measured: about 19 of a 24 s digits cell on 2 cores).

Inside :func:`shared_engine`, Flower's own ``RayBackend`` is replaced, for the
simulations started in it, by :class:`SharedRayBackend`, which differs in two places
only: ``build`` hands out the actor pool of the previous simulation when it is idle and
was built for the same client resources, and ``terminate`` leaves Ray and that pool
running. (Every simulation, shared or not, builds its pool with
:class:`fedkt.server.client_actor.ClientActor`, Flower's actor without the imports a
client never uses.) Everything else (message routing, the ServerApp/ClientApp, the in-memory
SuperLink state) is Flower's, unchanged and new for every simulation. Flower offers no
hook to keep its backend across simulations (``run_simulation`` always builds and
terminates a ``RayBackend``), so this module swaps the class Flower looks up; the same
kind of narrow patch as :mod:`fedkt.server.linkstate_index`, checked by the tests
against the pinned Flower version.

A warm actor keeps what a process caches: the resolved experiment and data layout of
recent configs (bounded LRU caches) and one model module per architecture; every
client's weights are loaded per message and every random draw is seeded by
(seed, client, round), so a cell's results are identical whether its actors are fresh
or warm (``tests/test_shared_engine.py``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fedkt.server import ray_addons
from fedkt.server.end_after_exit import end_after_exit, kill
from fedkt.server.lean_ray import lean_local_ray
from fedkt.signals import process_ends_at_stop

logger = logging.getLogger(__name__)


class _Shared:
    """The engine state shared by the simulations of one :func:`shared_engine` block."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.pool: Any = None  # flwr's BasicActorPool
        self.resources: dict[str, float] | None = None
        self.builds = 0  # actor pools created (what the tests count)
        self.stopping = False  # see stop_ray
        self.killed = False
        self.disconnecting: threading.Thread | None = None  # see stop_ray
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()  # every actor pool built here


# How long a library caller's stop waits for Flower's engine to end once its actors are
# gone (measured: well under a second; see stop_ray)
ENGINE_GRACE_SECONDS = 20.0


_STATE = _Shared()


def _idle(pool: Any) -> bool:
    """Every actor of ``pool`` is back and nothing is in flight."""
    return len(pool.pool) == pool.num_actors > 0 and not pool._future_to_actor


def _backend_class() -> type:
    """Flower's RayBackend with a shared actor pool (built on first use, so importing
    this module does not import Ray)."""
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    class SharedRayBackend(RayBackend):  # type: ignore[misc, valid-type]
        """RayBackend whose actors outlive one simulation inside :func:`shared_engine`."""

        def build(self, app_fn: Any) -> None:
            with _STATE.lock:
                active = _STATE.depth > 0
                pool = _STATE.pool
                if active and pool is not None and _STATE.resources == self.client_resources:
                    if _idle(pool):
                        self.pool, self.app_fn = pool, app_fn
                        return
                _drop_pool()
            self._build_pool(app_fn)
            if active:
                with _STATE.lock:
                    _STATE.pool, _STATE.resources = self.pool, dict(self.client_resources)
                    _STATE.builds += 1

        def _build_pool(self, app_fn: Any) -> None:
            """Flower's ``RayBackend.build`` with :class:`fedkt.server.client_actor.ClientActor`
            for Flower's actor class (whose module makes every worker import
            ``flwr.simulation``: see :mod:`fedkt.server.client_actor`)."""
            from flwr.simulation.ray_transport.ray_actor import BasicActorPool

            from fedkt.server.client_actor import ClientActor

            self.pool = BasicActorPool(
                actor_type=ClientActor,
                client_resources=self.client_resources,
                actor_kwargs=self.actor_kwargs,
            )
            self.pool.add_actors_to_pool(self.pool.actors_capacity)
            self.app_fn = app_fn
            _STATE.pools.add(self.pool)

        def init_ray(self, backend_config: Any) -> None:
            if _STATE.stopping:
                raise RuntimeError("fedkt is stopping: Ray is not started again")
            super().init_ray(backend_config)

        def terminate(self) -> None:
            with _STATE.lock:
                if _STATE.stopping:
                    # stop_ray has ended the actors and disconnects this process itself
                    # (once this engine has ended, or at once on a thread of its own when
                    # Ray's processes are dying). Ending the actors or shutting Ray down
                    # from here races that: a call made once the disconnection is done
                    # leaves a GCS client behind, which ends the whole process 60 s later
                    # (exit code 1, "Failed to connect to GCS within 60 seconds").
                    return
                if _STATE.depth > 0:
                    if self.pool is _STATE.pool and self.pool is not None and _idle(self.pool):
                        return  # kept for the next simulation (Ray stays up as well)
                    if self.pool is _STATE.pool:
                        _drop_pool()  # a failed or interrupted simulation: start afresh
                    return
            super().terminate()

    return SharedRayBackend


def _drop_pool() -> None:
    """Terminate the shared pool's actors (caller holds the lock)."""
    if _STATE.pool is not None:
        try:
            _STATE.pool.terminate_all_actors()
        except Exception as exc:  # noqa: BLE001 - actors already gone with Ray
            logger.debug("terminating the shared actor pool: %s", exc)
    _STATE.pool, _STATE.resources = None, None


_installed: list[type] = []


def _install() -> None:
    """Make Flower's simulation engine build :class:`SharedRayBackend` (idempotent).
    Outside :func:`shared_engine` it behaves exactly as Flower's RayBackend, except that
    it starts no Ray after :func:`stop_ray`."""
    from fedkt.server.environment import prepare_environment

    prepare_environment()  # before the import below imports Ray (which reads some at import)
    from flwr.server.superlink.fleet.vce.backend import raybackend

    if not _installed:
        _installed.append(_backend_class())
    raybackend.RayBackend = _installed[0]


def start_ray_here(backend_config: dict[str, Any], lean: bool = False) -> None:
    """Start Ray from the calling thread (Flower's own ``RayBackend`` initialisation,
    nothing else) unless it runs already; Flower's engine then finds it running.

    Why not let Flower start it in the thread that runs the simulation: Ray starts its
    raylet with ``PR_SET_PDEATHSIG``, which Linux fires when the *thread* that started
    it exits. Inside :func:`shared_engine`, that thread ends with the first simulation,
    the raylet is killed and the next simulation finds its actors gone
    (``ActorUnavailableError``); started from the thread that holds the shared engine,
    Ray lives as long as the block. And ``ray.init`` installs SIGTERM handlers (Python's
    ``sys.exit`` and a C++ one in its core worker that prints stack dumps and kills the
    process): started here, at a known point, the caller can put its own stop handler
    back right after (see :func:`fedkt.server.simulation.simulate`). Outside a shared
    engine Flower still shuts Ray down at the end of the simulation. ``lean``: the
    config starts a new instance of this machine, which then starts without the daemons
    no simulation uses (:mod:`fedkt.server.lean_ray`); never for a cluster joined by
    address."""
    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend

    _install()
    ray_addons.install()  # before this process's serialisation context exists
    _STATE.stopping = False
    if _STATE.killed:  # after stop_ray: wait until this process has let go of it
        _STATE.killed = False
        if _STATE.disconnecting is not None:
            _STATE.disconnecting.join()
            _STATE.disconnecting = None
    if not ray.is_initialized():
        if lean:
            verbose = bool(backend_config.get("init_args", {}).get("log_to_driver"))
            with lean_local_ray(log_to_driver=verbose):
                raybackend.RayBackend(backend_config)  # its __init__ is Flower's ray.init call
        else:
            raybackend.RayBackend(backend_config)


def stop_ray(engine_done: threading.Event | None = None) -> None:
    """Stop now, for a stop signal (Ctrl-C, SIGTERM): end the Ray processes this process
    started, and let no thread of Flower's engine start Ray again. ``engine_done``: set
    once the interrupted simulation's engine has ended (None: no engine is running).

    The danger is Ray's driver itself: it ends *the whole process* with status 1 and no
    message (Ray's ``QuickExit``) the moment one of its threads finds the raylet gone,
    e.g. a thread of Flower's engine fetching a client's reply from the object store
    (seen in CI: the test suite ended mid-run, after a test's Ctrl-C); and a driver left
    connected to a GCS that is gone ends the process 60 s later ("Failed to connect to
    GCS within 60 seconds"). So what stop_ray does depends on who is stopped:

    - A process that ends at a stop (:func:`fedkt.signals.ends_at_stop`: the ``fedkt``
      command, a comparison's jobs) kills nothing itself: a watcher kills the processes
      the moment this one has exited (:mod:`fedkt.server.end_after_exit`), after its
      closing line. No wait: the process is about to exit anyway.
    - A library caller (a notebook, a script that catches the ``KeyboardInterrupt`` and
      goes on) must survive. Its client actors are killed first (through the GCS, which
      a signal to this process alone leaves running), so that an engine thread waiting
      on a client's reply gets an error at once instead of the reply; once the engine
      has ended (``engine_done``) no thread of this process is inside a Ray call, and
      ``ray.shutdown()`` disconnects the driver *before* it ends the processes it
      started: nothing is left to find the raylet gone.
    - Only when that cannot be done (the engine still runs after
      :data:`ENGINE_GRACE_SECONDS`, or a Ctrl-C sent to the whole process group took
      the raylet or GCS with it) are the processes SIGKILLed at once, and the driver
      disconnected by ``ray.shutdown()`` on a daemon thread (it waits ~5 s on a dead
      GCS); the next :func:`start_ray_here` waits for it. That order keeps the chance
      that a thread still fetching a result finds the raylet gone; nothing better is
      possible once Ray's own processes are dying. The disconnection must beat Ray's
      GCS reconnect timeout (``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s by
      default; measured ~5.1 s here): set below that, the process ends with "Failed to
      connect to GCS" (tested: ``tests/stop_with_raylet_gone.py``).

    A cluster joined by address is left running: this process started none of its
    processes (``ray.shutdown()`` only disconnects from it)."""
    import psutil
    import ray

    with _STATE.lock:
        _STATE.stopping = True
        _STATE.pool, _STATE.resources = None, None  # its actors die with the raylet
        if not ray.is_initialized() or _STATE.killed:
            return
        _STATE.killed = True
    from ray._private import worker

    started = getattr(worker._global_node, "all_processes", {}).values()
    pids = [info.process.pid for infos in started for info in infos]
    roots: list[psutil.Process] = []
    tree: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            roots.append(root)
            tree += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    if process_ends_at_stop():
        end_after_exit(tree)
        return
    end_actors()
    if _ended(engine_done, ENGINE_GRACE_SECONDS) and len(roots) == len(pids) and all(
        _running(p) for p in roots
    ):
        ray.shutdown()
        _STATE.killed = False  # nothing left to wait for
        return
    logger.debug("Ray's processes are killed before the driver lets go of them")
    kill(tree)
    _STATE.disconnecting = threading.Thread(
        target=ray.shutdown, name="fedkt-ray-disconnect", daemon=True
    )
    _STATE.disconnecting.start()


def end_actors() -> None:
    """Kill every client actor of the pools this process built, idle or busy: a call in
    flight on one of them then fails at once (``RayActorError``) instead of running to
    its end. Through the GCS, so only while Ray's processes run."""
    import ray

    for pool in list(_STATE.pools):
        for actor in [*pool.pool, *list(pool._future_to_actor.values())]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already dead, or Ray going down
                logger.debug("killing a client actor: %s", exc)


def _ended(done: threading.Event | None, grace: float) -> bool:
    """Whether ``done`` is set within ``grace`` seconds (None: nothing to wait for).
    Polled without waiting on the event: a Ctrl-C landing in ``Event.wait`` may leave
    its lock held."""
    if done is None:
        return True
    deadline = time.monotonic() + grace
    while not done.is_set():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _running(proc: Any) -> bool:
    """``proc`` (a psutil.Process) runs still (not gone, not a zombie)."""
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def shared_pool_builds() -> int:
    """How many actor pools the shared engine has created (for tests and benchmarks)."""
    return _STATE.builds


@contextmanager
def shared_engine() -> Iterator[None]:
    """Simulations run inside this block share one Ray instance and one pool of warm
    worker actors; leaving it stops them (Ray too, when this process started it)."""
    _install()
    with _STATE.lock:
        _STATE.depth += 1
    stopped = False
    try:
        yield
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        with _STATE.lock:
            _STATE.depth -= 1
            last = _STATE.depth == 0
        if stopped:
            stop_ray()  # engine threads may still be running: they must not restart Ray
        elif last:
            with _STATE.lock:
                _drop_pool()
            import ray

            if ray.is_initialized():
                ray.shutdown()
