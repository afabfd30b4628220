"""A SuperNode sends the reply to the message it just took before it takes the next one.

Why: Flower 1.39's SuperNode loop (``flwr/supernode/start_client_internal.py``) takes one
message from the SuperLink (``_pull_and_store_message``), then waits in
``_push_messages`` until its state holds *any* reply, sends the replies it holds and goes
back for the next message. A reply left behind by a stopped run breaks that: when a run is
stopped while its message is on the node, the loop drops the message ("not in RUNNING
status. Ignoring message") without waiting for its ClientApp, whose reply lands in the
state a moment later and stays there. When the next run's first message comes, the loop
finds that stale reply at once, sends it (the SuperLink refuses it: "Run is finished"),
and goes back to pulling, while the new message's reply arrives after it and is never
sent: the SuperLink has nothing more for the node until that reply comes, so the new run
waits forever (seen once in CI: ``evidence/deploy-stop-flake-2026-12-02``).

:func:`install` keeps Flower's two functions and their order, and makes the push step
go on until the reply to the message the loop took last has been sent (or refused):
``_pull_and_store_message`` is given a ``receive`` that notes which message it returned,
and ``_push_messages`` a ``send`` that notes which message each reply answers; the push
step is repeated while the one reply it is there for has not gone out. Stale replies are
still sent, as before, and still refused by the SuperLink.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

_MARK = "_fedkt_reply_wait"


class _Expected:
    """The message the loop took last (None once it was dropped or answered)."""

    def __init__(self) -> None:
        self.message_id: str | None = None
        self.answered: set[str] = set()


def _takes(func: Callable[..., Any], *names: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return all(name in params for name in names)


def install(loop: ModuleType) -> bool:
    """Patch ``loop`` (Flower's ``flwr.supernode.start_client_internal``) as described
    above; True when done (or already done), False when its functions are not the ones
    this was written against (then nothing is changed)."""
    pull = getattr(loop, "_pull_and_store_message", None)
    push = getattr(loop, "_push_messages", None)
    if pull is None or push is None:
        return False
    if getattr(pull, _MARK, False) and getattr(push, _MARK, False):
        return True
    if not (_takes(pull, "state", "receive") and _takes(push, "state", "send")):
        return False
    expected = _Expected()
    pull_signature, push_signature = inspect.signature(pull), inspect.signature(push)

    @functools.wraps(pull)
    def pull_and_store_message(*args: Any, **kwargs: Any) -> int | None:
        call = pull_signature.bind(*args, **kwargs)
        receive = call.arguments["receive"]

        def noting_receive() -> Any:
            got = receive()
            if got is not None:
                expected.message_id = got[0].metadata.message_id
            return got

        call.arguments["receive"] = noting_receive
        expected.message_id = None
        run_id = pull(*call.args, **call.kwargs)
        if run_id is None:
            expected.message_id = None  # dropped (or nothing came): the loop pushes nothing
        return run_id

    @functools.wraps(push)
    def push_messages(*args: Any, **kwargs: Any) -> None:
        call = push_signature.bind(*args, **kwargs)
        send = call.arguments["send"]

        def noting_send(message: Any, *rest: Any) -> Any:
            expected.answered.add(message.metadata.reply_to_message_id)  # sent or refused
            return send(message, *rest)

        call.arguments["send"] = noting_send
        waiting_for = expected.message_id
        while True:
            push(*call.args, **call.kwargs)
            if waiting_for is None or waiting_for in expected.answered:
                break
        expected.answered.clear()
        expected.message_id = None

    setattr(pull_and_store_message, _MARK, True)
    setattr(push_messages, _MARK, True)
    loop._pull_and_store_message = pull_and_store_message  # type: ignore[attr-defined]
    loop._push_messages = push_messages  # type: ignore[attr-defined]
    return True
