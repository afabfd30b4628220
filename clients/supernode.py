"""``fedkt-supernode``: Flower's own ``flower-supernode``, asking its SuperLink for work more
often.

Why: Flower 1.39's SuperNode loop (``flwr/supernode/start_client_internal.py``) sleeps a fixed
3 s whenever the SuperLink has no message for it, checks for its ClientApp's reply every
0.5 s, and retries a pull of a message's objects after 1 s (``clients/object_pulls.py``).
A round of fedkt sends each client two messages (train, then fine-tune + evaluate), each
sent only once every client has answered the one before, so almost every message waits for a
node's next poll: about 7 s per round whatever the work (measured on loopback: a deployed KnFu
round took 8.6 s against 1.1 s simulated). There is no option for it.

This command runs Flower's ``flower-supernode`` unchanged (same arguments, same code path)
after making its loop send the reply to each message before taking the next
(:mod:`fedkt.clients.reply_wait`: a reply left by a stopped run could hold up the next run)
and giving that one module a ``time`` whose ``sleep`` waits at most
``FEDKT_SUPERNODE_POLL`` seconds (default 0.25) for the SuperLink, and at most
``LOCAL_WAIT`` (0.02 s) for what happens on the node itself (the ClientApp's reply: a lookup
in the node's own memory), and with fedkt's object-pull pace. The price is more requests to
the SuperLink from an idle node: 4 per second instead of one every 3 s, negligible for tens
of nodes; set
``FEDKT_SUPERNODE_POLL=3`` to get Flower's pace back for a large federation.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import Any

DEFAULT_POLL = 0.25
#: Cap of the loop's shorter waits, those for the node's own ClientApp (Flower: 0.5 s).
LOCAL_WAIT = 0.02
#: Flower's loop waits this long or longer only between polls of the SuperLink.
_REMOTE_WAIT = 1.0


def poll_seconds() -> float:
    """``FEDKT_SUPERNODE_POLL`` (seconds, in (0, 60]), or the default; a bad value is one line."""
    from fedkt.clients.env import env_seconds
    from fedkt.errors import FedktError

    try:
        return env_seconds("FEDKT_SUPERNODE_POLL", DEFAULT_POLL, 60)
    except FedktError as exc:
        raise SystemExit(f"fedkt-supernode: {exc}") from None


class CappedSleepTime:
    """The ``time`` module, except that ``sleep`` waits at most ``cap`` seconds where Flower
    waits for the SuperLink (>= 1 s) and at most ``local`` where it waits for its own
    ClientApp."""

    def __init__(self, cap: float, base: ModuleType = time, local: float = LOCAL_WAIT) -> None:
        self.cap = cap
        self.local = local
        self._base = base

    def sleep(self, seconds: float) -> None:
        limit = self.cap if seconds >= _REMOTE_WAIT else min(self.cap, self.local)
        self._base.sleep(min(seconds, limit))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def install(cap: float) -> bool:
    """Give Flower's SuperNode loop the capped ``time`` (True when it looks as expected)."""
    from flwr.supernode import start_client_internal as loop

    current = getattr(loop, "time", None)
    if isinstance(current, CappedSleepTime):
        current.cap = cap
        return True
    if current is not time:
        return False  # another Flower than the one this was written against: leave it
    loop.time = CappedSleepTime(cap)  # type: ignore[attr-defined]
    return True


def main() -> int:
    from fedkt.clients.object_pulls import install as fast_object_pulls
    from fedkt.errors import FedktError

    cap = poll_seconds()
    try:
        fast_object_pulls()
    except FedktError as exc:
        raise SystemExit(f"fedkt-supernode: {exc}") from None
    if not install(cap):
        print("fedkt-supernode: Flower's SuperNode loop changed; polling at Flower's pace",
              file=sys.stderr)  # fmt: skip
    from flwr.supernode import start_client_internal as loop

    from fedkt.clients.reply_wait import install as wait_for_each_reply

    if not wait_for_each_reply(loop):
        print("fedkt-supernode: Flower's SuperNode loop changed; a reply left by a stopped "
              "run may hold up the next run", file=sys.stderr)  # fmt: skip
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
