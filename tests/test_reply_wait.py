"""fedkt-supernode sends the reply to the message it just took before taking the next one,
even when a stopped run left a reply behind (fedkt.clients.reply_wait). The loop below has
the shape of Flower 1.39's SuperNode loop: take a message, wait for *any* reply, send the
replies held, take the next message."""

from __future__ import annotations

import threading
import time
import types
from types import SimpleNamespace

from fedkt.clients.reply_wait import install


def _message(message_id: str, reply_to: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        metadata=SimpleNamespace(message_id=message_id, reply_to_message_id=reply_to)
    )


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: list[SimpleNamespace] = []

    def add_reply(self, reply: SimpleNamespace) -> None:
        with self.lock:
            self.replies.append(reply)

    def take_replies(self) -> list[SimpleNamespace]:
        with self.lock:
            taken, self.replies = self.replies, []
        return taken


def _flower_like_loop() -> types.ModuleType:
    loop = types.ModuleType("fake_start_client_internal")

    def _pull_and_store_message(state, object_store, receive):  # noqa: ANN001
        got = receive()
        return None if got is None else 1  # the run id

    def _push_messages(state, object_store, send, push_object):  # noqa: ANN001
        while not (replies := state.take_replies()):  # any reply will do
            time.sleep(0.01)
        for reply in replies:
            send(reply, None, 0.0)

    loop._pull_and_store_message = _pull_and_store_message
    loop._push_messages = _push_messages
    return loop


def _one_turn(loop: types.ModuleType, stale: bool) -> list[str]:
    """A new message arrives while (if ``stale``) a stopped run's reply waits in the state;
    its own reply comes 0.2 s later. Returns the replies the turn sent."""
    state, sent = _State(), []
    if stale:
        state.add_reply(_message("r-old", reply_to="m-old"))
    new = _message("m-new")
    run_id = loop._pull_and_store_message(
        state=state, object_store=None, receive=lambda: (new, None)
    )
    assert run_id == 1
    threading.Timer(0.2, state.add_reply, [_message("r-new", reply_to="m-new")]).start()
    loop._push_messages(
        state=state,
        object_store=None,
        send=lambda reply, *rest: sent.append(reply.metadata.message_id),
        push_object=None,
    )
    time.sleep(0.3)  # (the reply the turn did not wait for has landed by now)
    return sent


def test_without_the_patch_a_stale_reply_strands_the_new_one():
    assert _one_turn(_flower_like_loop(), stale=True) == ["r-old"]  # the bug it fixes


def test_the_patched_loop_sends_the_new_reply_before_taking_the_next_message():
    loop = _flower_like_loop()
    assert install(loop) and install(loop)  # idempotent
    assert _one_turn(loop, stale=True) == ["r-old", "r-new"]
    assert _one_turn(loop, stale=False) == ["r-new"]
    # a dropped message (the loop then pushes nothing) leaves nothing to wait for
    nothing = loop._pull_and_store_message(state=_State(), object_store=None, receive=lambda: None)
    assert nothing is None


def test_it_patches_flowers_own_loop_and_leaves_another_shape_alone(monkeypatch):
    from flwr.supernode import start_client_internal as flower_loop

    monkeypatch.setattr(flower_loop, "_pull_and_store_message", flower_loop._pull_and_store_message)
    monkeypatch.setattr(flower_loop, "_push_messages", flower_loop._push_messages)
    assert install(flower_loop)
    other = types.ModuleType("other")
    other._pull_and_store_message = lambda state: None
    other._push_messages = lambda state, send: None
    assert not install(other)
    assert other._push_messages.__name__ == "<lambda>"  # unchanged
