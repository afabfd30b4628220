"""Which simulated node holds which partition, from Flower's simulation engine itself.

The server learns who a deployed node is by asking it (the handshake). In simulation
the engine assigns partitions to the nodes it creates (``vce_api._register_nodes``
returns node id -> partition id), so asking 10,000 virtual nodes before the first round
(about 144 s, one message each) only rediscovers what the engine already knows. This
module records that mapping when Flower registers the nodes, so the ServerApp can send
the handshake to a node only when it is first sampled. Flower keeps the mapping local
to the engine; recording it means wrapping that one function (the same kind of narrow
patch as :mod:`fedkt.server.linkstate_index`, checked against the pinned Flower by
``tests/test_node_directory.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

_lock = threading.Lock()
_registered = threading.Event()
_mapping: dict[int, int] = {}  # node id -> partition id of the last simulation started
_wrapped: list[Any] = []


def install() -> None:
    """Record the node -> partition mapping whenever Flower's engine registers its
    nodes (idempotent), and forget the previous one: call before each simulation."""
    from flwr.server.superlink.fleet.vce import vce_api

    if not _wrapped:
        original = vce_api._register_nodes

        def register_nodes(*args: Any, **kwargs: Any) -> dict[int, int]:
            mapping = original(*args, **kwargs)
            with _lock:
                _mapping.clear()
                _mapping.update(mapping)
            _registered.set()
            return mapping

        _wrapped.append(register_nodes)
    vce_api._register_nodes = _wrapped[0]
    with _lock:
        _mapping.clear()
    _registered.clear()


def directory(grid: Any, timeout: float = 30.0) -> dict[int, int] | None:
    """Partition id -> node id of every node of ``grid``, or None when the engine's
    mapping is not (yet) that of these nodes: the caller then asks the nodes."""
    if not _registered.wait(timeout):
        return None
    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            mapping = dict(_mapping)
        if set(mapping) == set(grid.get_node_ids()):
            return {pid: node for node, pid in mapping.items()}
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
