"""A per-node index of undelivered messages for Flower's in-memory LinkState.

Why: in Flower 1.39 the simulation engine polls every virtual SuperNode for its next
message every 0.1 s (``vce_api.add_messages_to_queue``), and
``InMemoryLinkState.get_message_ins`` answers each poll by scanning *every* stored
message, validating each one (expiry, federation membership) on the way. One sweep
therefore costs (nodes x stored messages): 1,000 clients in a round is a million
validations per sweep, all under the state's lock, and a 10,000-node handshake a
hundred million. Profiling fedkt at 1,000 clients put most of the round's wall time
there, not in training.

The fix keeps Flower's behaviour and changes only the lookup: store_message_ins also
records the message id under its destination node, and get_message_ins walks that
node's ids alone (in the same insertion order, with the same validation of each
candidate, the same ``limit`` and ``run_id`` filters, and the same marking as
delivered). Ids whose message is gone (replied and deleted, or expired) are dropped
from the index as they are met. Expired messages of *other* nodes are no longer
swept by every poll; each is still removed when its own node polls (the simulation
polls every node every sweep) or when its reply is pulled.

The engine's sweep itself (``add_messages_to_queue``) is replaced by one that polls
only the nodes the index holds messages for (same order, one message per node per
sweep): at 10,000 nodes, 10,000 polls every 0.1 s cost a third of the process's CPU.
It also sweeps as soon as a message is stored instead of at its next 0.1 s tick: each
phase of a round waited 50 ms on average for that tick, which on small federations
(the default comparison's cells) was a tenth of a round's wall time.

Installed by :func:`install` in the simulation process only (deployed SuperLinks run
Flower's own code). It patches two methods of a class of the pinned Flower version and
refuses, with a warning, to patch a class that does not look like the one it was
written against.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from flwr.app import Message

_INDEX = "_fedkt_ins_by_node"
_ARRIVED = "_fedkt_ins_arrived"
_REPLIED = "_fedkt_res_stored"
_MARK = "_fedkt_indexed"
_logger = logging.getLogger(__name__)
_install_lock = threading.Lock()
ORIGINAL: dict[str, object] = {}  # Flower's own methods, kept for comparison in tests


def _index(state) -> dict[int, list[str]]:
    index = state.__dict__.get(_INDEX)
    if index is None:
        index = state.__dict__[_INDEX] = {}
        # Messages stored before the index existed (none in fedkt's use; kept correct anyway).
        for msg_id, msg in state.message_ins_store.items():
            index.setdefault(msg.metadata.dst_node_id, []).append(msg_id)
    return index


def indexed_get_message_ins(
    state, node_id: int, limit: int | None, *, run_id: int | None = None
) -> list[Message]:
    """``InMemoryLinkState.get_message_ins`` with a per-node lookup (see module doc)."""
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Message] = []
    with state.lock:
        ids = _index(state).get(node_id)
        if not ids:
            return found
        kept: list[str] = []
        for msg_id in ids:
            if limit and len(found) == limit:
                kept.append(msg_id)
                continue
            state._check_stored_messages({msg_id})
            msg = state.message_ins_store.get(msg_id)
            if msg is None or msg.metadata.delivered_at != "":
                # replied and deleted, expired, or already handed out: never returned again
                continue
            kept.append(msg_id)
            if msg.metadata.dst_node_id == node_id and (
                run_id is None or msg.metadata.run_id == run_id
            ):
                found.append(msg)
        # Delivered ones leave the index below; the rest stay for the next poll.
        delivered = {m.metadata.message_id for m in found}
        _index(state)[node_id] = [i for i in kept if i not in delivered]
    delivered_at = _now_iso()
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def _event(state, name: str) -> threading.Event:
    """The event ``name`` kept on ``state`` (made on first use)."""
    event = state.__dict__.get(name)
    if event is None:
        event = state.__dict__.setdefault(name, threading.Event())
    return event


def _arrived(state) -> threading.Event:
    """Set whenever a message is stored: wakes the sweep."""
    return _event(state, _ARRIVED)


def wake_sweep(state) -> None:
    """End the sweep's current pause now (the run is stopping: it looks at its stop event
    at once instead of up to 0.1 s later)."""
    _arrived(state).set()


def _replied(state) -> threading.Event:
    """Set whenever a reply is stored: wakes a ServerApp waiting for replies."""
    return _event(state, _REPLIED)


def reply_signal(grid: object) -> threading.Event | None:
    """An event set whenever a reply reaches ``grid``'s LinkState, when that state lives
    in this process and is indexed (a simulation); None otherwise (a deployed SuperLink,
    which a ServerApp can only poll). Clear it before pulling, wait on it after."""
    state = getattr(grid, "state", None)
    if state is None or not getattr(type(state), _MARK, False):
        return None
    return _replied(state)


def pending_nodes(state, nodes: Iterable[int]) -> list[int]:
    """The nodes among ``nodes`` (in their order) that have indexed, undelivered
    messages: the only ones a poll can return anything for."""
    with state.lock:
        index = _index(state)
        return [n for n in nodes if index.get(n)]


def indexed_add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
    """``vce_api.add_messages_to_queue`` polling only nodes with pending messages.

    Flower's sweep calls ``get_message_ins`` for every node every 0.1 s; with 10,000
    virtual nodes that was a third of the simulation process's CPU in a profile even
    with the index, taken from the workers. Same order (the mapping's), same
    ``limit=1`` per node per sweep; the pause between sweeps ends early when a message
    is stored (cleared before each sweep, so a message stored during one is never
    missed) and at most 0.1 s after a stop, as Flower's."""
    arrived = _arrived(state)
    while not f_stop.is_set():
        arrived.clear()
        for node_id in pending_nodes(state, nodes_mapping.keys()):
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        arrived.wait(0.1)


def _now_iso() -> str:
    """The clock Flower's LinkState stamps deliveries with."""
    from flwr.server.superlink.linkstate import in_memory_linkstate

    return in_memory_linkstate.now().isoformat()


def install() -> bool:
    """Patch Flower's InMemoryLinkState in this process (idempotent); True when active."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    with _install_lock:
        if getattr(InMemoryLinkState, _MARK, False):
            return True
        from flwr.server.superlink.linkstate import in_memory_linkstate

        needed = (
            "store_message_ins",
            "store_message_res",
            "get_message_ins",
            "_check_stored_messages",
        )
        if not all(hasattr(InMemoryLinkState, name) for name in needed) or not hasattr(
            in_memory_linkstate, "now"
        ):
            _logger.warning(
                "Flower's InMemoryLinkState changed; simulating without fedkt's message index"
            )
            return False
        original_store = InMemoryLinkState.store_message_ins
        original_store_res = InMemoryLinkState.store_message_res
        ORIGINAL.update(
            store_message_ins=original_store,
            store_message_res=original_store_res,
            get_message_ins=InMemoryLinkState.get_message_ins,
        )

        def store_message_ins(self, message: Message) -> str | None:
            with self.lock:
                index = _index(self)  # built (from the store as it is) before this message lands
                known = message.metadata.message_id in self.message_ins_store
                msg_id = original_store(self, message)
                if msg_id is not None and not known:
                    index.setdefault(message.metadata.dst_node_id, []).append(msg_id)
            if msg_id is not None:
                _arrived(self).set()
            return msg_id

        def store_message_res(self, message: Message) -> str | None:
            msg_id = original_store_res(self, message)
            if msg_id is not None:
                _replied(self).set()
            return msg_id

        InMemoryLinkState.store_message_ins = store_message_ins
        InMemoryLinkState.store_message_res = store_message_res
        InMemoryLinkState.get_message_ins = indexed_get_message_ins
        from flwr.server.superlink.fleet.vce import vce_api

        if hasattr(vce_api, "add_messages_to_queue"):
            ORIGINAL["add_messages_to_queue"] = vce_api.add_messages_to_queue
            vce_api.add_messages_to_queue = indexed_add_messages_to_queue
        setattr(InMemoryLinkState, _MARK, True)
        return True
