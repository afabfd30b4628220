"""A local Ray instance without the daemons a simulation on one machine never uses.

``ray.init(address="local")`` starts, beside the GCS and the raylet (with its dashboard
and runtime-env agents, which the raylet needs), three Python daemons of its head node:

- the autoscaler's monitor, which scales a cluster that is one fixed machine here;
- the dashboard's API server, which serves the dashboard and the state/job APIs over HTTP
  (fedkt sets ``include_dashboard=False``, and neither Flower nor fedkt calls those APIs);
- the log monitor, which forwards the workers' output to the driver, wanted only when
  ``log_to_driver`` is on (``--verbose``).

Each imports Ray and much of Python at start-up and wakes up periodically afterwards.
Measured on one core with 12 digits cells of the default comparison: the three together
used 2.2 of the job's 43 CPU-seconds (49 s wall) and held 180 MiB PSS per Ray instance; a
comparison runs one Ray instance per job, and a run of 20 MNIST clients one beside its two
workers.
``ray.init`` offers no switch for them (the ``RayParams`` it builds sets ``no_monitor``
and ``include_log_monitor`` only through ``ray start``'s hidden flags, and always starts
the API server), so :func:`lean_local_ray` makes the one ``ray.init`` call it wraps build
its head node from :class:`LeanHeadNode`: Ray's ``Node`` with those two parameters set
and the API server not started. Nothing else changes: the same GCS, raylet, agents,
workers and scheduling, so a simulation's numbers are the same (a cell on Ray with every
daemon equals the lean run bit for bit: ``tests/test_shared_engine.py``).

A Ray whose ``Node`` is not the one this was written against (Ray 2.55, which Flower 1.39
pins) is left alone: the wrapped ``ray.init`` then starts every daemon, as before. A
cluster joined by address is never touched (its nodes are started by ``ray start``).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_classes: list[type] = []


def _lean_node_class() -> type | None:
    """:class:`LeanHeadNode` for this Ray, or None where its ``Node`` differs from the
    one written against (then nothing is changed)."""
    if _classes:
        return _classes[0]
    try:
        from ray._private import node, parameter
    except ImportError:
        return None
    params = inspect.signature(parameter.RayParams.__init__).parameters
    head_methods = ("start_head_processes", "start_api_server", "start_monitor")
    if not (
        {"no_monitor", "include_log_monitor"} <= set(params)
        and all(callable(getattr(node.Node, name, None)) for name in head_methods)
        and "head" in inspect.signature(node.Node.__init__).parameters
    ):
        return None

    base = node.Node  # (within the block ``node.Node`` is the subclass itself)

    class LeanHeadNode(base):  # type: ignore[misc, valid-type]
        """Ray's head ``Node`` without the autoscaler's monitor, the API server and (while
        ``keep_log_monitor`` is False) the log monitor."""

        keep_log_monitor = False

        def __init__(self, ray_params: Any, *args: Any, **kwargs: Any) -> None:
            bound = inspect.signature(base.__init__).bind(self, ray_params, *args, **kwargs)
            bound.apply_defaults()
            if bound.arguments["head"] and not bound.arguments.get("connect_only", False):
                ray_params.no_monitor = True
                if not self.keep_log_monitor:
                    ray_params.include_log_monitor = False
            super().__init__(ray_params, *args, **kwargs)

        def start_api_server(self, **kwargs: Any) -> None:
            """Not started: no dashboard, and no caller of Ray's state or job APIs."""

    _classes.append(LeanHeadNode)
    return LeanHeadNode


@contextmanager
def lean_local_ray(log_to_driver: bool = False) -> Iterator[bool]:
    """Inside this block, a ``ray.init`` that starts a new local instance starts it
    without the monitor, the API server and (unless ``log_to_driver``) the log monitor.
    Yields whether it is in effect (False for a Ray it was not written against). Meant
    around one ``ray.init`` call on the thread that starts Ray; other threads creating
    Ray nodes meanwhile would get the same lean head node."""
    lean = _lean_node_class()
    if lean is None:
        yield False
        return
    from ray._private import node

    with _lock:
        original = node.Node
        lean.keep_log_monitor = log_to_driver
        node.Node = lean
        try:
            yield True
        finally:
            node.Node = original
