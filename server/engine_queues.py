"""The simulation engine's queues wake often enough to notice a stop promptly.

Why: in Flower 1.39 the simulation engine's worker and reply threads block on
``Queue.get(timeout=1.0)`` and look at the stop event only when that wait ends, and
``run_api`` joins them before it returns. So every simulation ended up to a second after
its last round: the bulk of the fixed cost of each cell of a comparison once cells share
one engine start (1.2 s measured), paid 110 times by the default comparison.

The engine module builds its two queues as ``Queue()``; :func:`install` gives it a
``Queue`` whose blocking ``get`` waits at most :data:`WAKE` seconds. A shorter wait only
raises ``queue.Empty`` sooner, which the engine's loops already treat as "nothing yet:
check the stop event and wait again", so messages flow exactly as before; the threads
just wake ten times a second while idle. Installed in the simulation process only.

That still left each simulation's end waiting for the slowest of those wake-ups (the
worker threads', the reply thread's and fedkt's message sweep's, each up to 0.1 s: about
80 ms per cell, 55 cells per job of the default comparison). So :func:`install` also wraps
the engine's ``run_api`` with a thread that waits on the run's own stop event and, the
moment it is set, wakes every waiting ``get`` of that run's queues (they raise ``Empty``
at once, as at the end of a wait) and the sweep (:func:`fedkt.server.linkstate_index.wake_sweep`).
Each thread then sees the stop as it would have 0-0.1 s later.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

#: The longest a blocking ``get`` of the engine's queues waits before looking again.
WAKE = 0.1
_lock = threading.Lock()


class PromptQueue(queue.Queue):
    """``queue.Queue`` whose ``get`` with a timeout waits at most :data:`WAKE` s (a ``get``
    without one still blocks until an item arrives), and ends at once, empty-handed, when
    :meth:`wake` is called (the run is stopping)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._woken = 0  #: how many times :meth:`wake` was called

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block or timeout is None:
            return super().get(block, timeout)
        deadline = time.monotonic() + min(timeout, WAKE)
        with self.not_empty:
            woken = self._woken
            while not self._qsize():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._woken != woken:
                    raise queue.Empty
                self.not_empty.wait(remaining)
            item = self._get()
            self.not_full.notify()
            return item

    def wake(self) -> None:
        """End every ``get`` waiting now with ``queue.Empty`` (later ones wait as usual)."""
        with self.not_empty:
            self._woken += 1
            self.not_empty.notify_all()


def _wake_at_stop(f_stop: threading.Event, done: threading.Event, state_factory: Any) -> None:
    """Wait for the run's stop (or for ``run_api`` to return without one), then wake the
    run's waiting threads."""
    while not f_stop.wait(1.0):
        if done.is_set():
            return
    with _lock:
        waiting = [q for q in _QUEUES if q.__dict__.get("_fedkt_run") is f_stop]
    for q in waiting:
        q.wake()
    from fedkt.server.linkstate_index import wake_sweep

    wake_sweep(state_factory.state())


#: The engine's live queues, each tagged with its run's stop event by ``run_api``.
_QUEUES: weakref.WeakSet[PromptQueue] = weakref.WeakSet()


def _waking_run_api(original: Callable[..., Any]) -> Callable[..., Any]:
    """Flower's ``run_api`` with its run's queues woken as soon as the run stops."""
    signature = inspect.signature(original)

    def run_api(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs).arguments
        f_stop, state_factory = bound["f_stop"], bound["state_factory"]
        done = threading.Event()
        _current.run = f_stop
        waker = threading.Thread(
            target=_wake_at_stop, args=(f_stop, done, state_factory), daemon=True
        )
        waker.start()
        try:
            return original(*args, **kwargs)
        finally:
            _current.run = None
            done.set()

    run_api.__wrapped__ = original  # type: ignore[attr-defined]
    return run_api


#: The stop event of the run whose ``run_api`` this thread is in (queues built there
#: belong to it).
_current = threading.local()


def _queue_of_this_run(maxsize: int = 0) -> PromptQueue:
    """What ``vce_api.Queue()`` builds: a PromptQueue, tagged with the run building it."""
    q = PromptQueue(maxsize)
    q.__dict__["_fedkt_run"] = getattr(_current, "run", None)
    with _lock:
        _QUEUES.add(q)
    return q


def install() -> bool:
    """Patch the engine module's ``Queue`` and ``run_api`` in this process (idempotent);
    True when active."""
    from flwr.server.superlink.fleet.vce import vce_api

    with _lock:
        if getattr(vce_api, "Queue", None) is _queue_of_this_run:
            return True
        if getattr(vce_api, "Queue", None) is not queue.Queue:
            return False  # another Flower than the one this was written against: leave it
        run_api = getattr(vce_api, "run_api", None)
        params = inspect.signature(run_api).parameters if callable(run_api) else {}
        if "f_stop" not in params or "state_factory" not in params:
            return False
        vce_api.Queue = _queue_of_this_run  # type: ignore[attr-defined]
        vce_api.run_api = _waking_run_api(run_api)  # type: ignore[arg-type]
        return True
