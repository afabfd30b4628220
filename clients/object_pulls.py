"""Flower's object pulls, retried at the pace of a round rather than of a WAN.

Why: since Flower 1.20 a message travels as a tree of objects, and whoever receives it
(the SuperNode from the SuperLink, the ClientApp from its SuperNode, the ServerApp from
the SuperLink) pulls the objects one by one. A pull that comes before its object has
arrived is retried after 1 s, then 2, 4, ... up to 10 s (``PULL_INITIAL_BACKOFF``,
``PULL_BACKOFF_CAP`` in ``flwr/supercore/constant.py``). In a deployed fedkt round that
happens on every message: the SuperNode hands a task to its ClientApp *before* it has
pulled the message's objects from the SuperLink, so the ClientApp's first pull always finds
them missing and waits a full second; the same race between a reply and its objects
costs the ServerApp another. Two messages per client and round made that most of the
~4.6 s a deployed round spent beyond its work (BENCHMARKS.md).

:func:`install` sets the first retry to ``FEDKT_PULL_BACKOFF`` seconds (default 0.02),
doubling up to 1 s, for every pull made in this process (Flower's own functions, same
code path; only their default waits change). Objects that are late for long are still
waited for, polled once a second instead of every ten. ``FEDKT_PULL_BACKOFF=1`` gives
Flower's pace back.
"""

from __future__ import annotations

from fedkt.clients.env import env_seconds

DEFAULT_BACKOFF = 0.02
BACKOFF_CAP = 1.0
ENV = "FEDKT_PULL_BACKOFF"


def backoff_seconds() -> float:
    """``FEDKT_PULL_BACKOFF`` (seconds, in (0, 10]), or the default; a bad value is one line."""
    return env_seconds(ENV, DEFAULT_BACKOFF, 10)


def install(initial: float | None = None) -> bool:
    """Make Flower's object pulls in this process retry after ``initial`` seconds
    (default :func:`backoff_seconds`), doubling up to ``max(initial, 1 s)``.

    Returns False (and changes nothing) when the installed Flower's pull functions do not
    have the keyword defaults this was written against."""
    from flwr.supercore.inflatable import inflatable_utils as pulls

    first = backoff_seconds() if initial is None else initial
    cap = max(first, BACKOFF_CAP)
    functions = (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree)
    defaults = [getattr(f, "__kwdefaults__", None) or {} for f in functions]
    if not all("initial_backoff" in d and "backoff_cap" in d for d in defaults):
        return False
    for d in defaults:
        d["initial_backoff"] = first
        d["backoff_cap"] = cap
    return True
