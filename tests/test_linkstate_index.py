"""fedkt's per-node message index answers every poll exactly as Flower's own scan does."""

import queue
import secrets
import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.constant import NOOP_ACCOUNT_NAME, NOOP_FLWR_AID, SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager

from fedkt.server.linkstate_index import (
    ORIGINAL,
    indexed_add_messages_to_queue,
    indexed_get_message_ins,
    install,
    reply_signal,
)

RUN_ID = 7


@pytest.fixture(autouse=True)
def _task_identity():
    """Messages take their run id from Flower's TaskIdentity (the simulation sets it)."""
    before = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = before


def _state_with_nodes(n: int) -> tuple[InMemoryLinkState, int, list[int]]:
    state = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    ).state()
    # Registered as Flower's run_simulation registers its run.
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id, run.federation_id = 11, NOOP_FEDERATION_ID
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[11] = Task(task_id=11, run_id=RUN_ID)
    nodes = []
    for _ in range(n):
        node = state.create_node(
            NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32), heartbeat_interval=1e9
        )
        state.acknowledge_node_heartbeat(node_id=node, heartbeat_interval=1e9)
        nodes.append(node)
    return state, run.run_id, nodes


def _push(
    state: InMemoryLinkState, run_id: int, node: int, tag: int, ttl: float | None = None
) -> str:
    msg = Message(
        RecordDict({"c": ConfigRecord({"tag": tag})}),
        dst_node_id=node,
        message_type=MessageType.TRAIN,
        **({"ttl": ttl} if ttl is not None else {}),
    )
    msg.metadata.__dict__["_message_id"] = f"m{tag}"
    return state.store_message_ins(msg)


def _poll_all(state, nodes, get) -> list[tuple[int, list[int]]]:
    return [
        (i, [int(m.content["c"]["tag"]) for m in get(state, node, 1)])
        for i, node in enumerate(nodes)
    ]


def test_indexed_polls_match_flowers_scan():
    assert install()
    # Same script on two states: one answered by Flower's scan, one by the index.
    results = []
    for get in (ORIGINAL["get_message_ins"], indexed_get_message_ins):
        state, run_id, nodes = _state_with_nodes(5)
        tag = 0
        for node in [nodes[0], nodes[2], nodes[0], nodes[4], nodes[0]]:
            tag += 1
            assert _push(state, run_id, node, tag) == f"m{tag}"
        trace = [
            _poll_all(state, nodes, get) for _ in range(4)
        ]  # limit=1: one message per node per sweep
        state.delete_messages({"m1"})
        tag += 1
        _push(state, run_id, nodes[0], tag)
        trace.append(_poll_all(state, nodes, get))
        trace.append([(0, [int(m.content["c"]["tag"]) for m in get(state, nodes[3], None)])])
        results.append(trace)
    assert results[0] == results[1]
    # messages come out in the order they were stored, one per poll, and never twice
    assert results[1][0] == [(0, [1]), (1, []), (2, [2]), (3, []), (4, [4])]
    assert (
        results[1][1][0] == (0, [3])
        and results[1][2][0] == (0, [5])
        and results[1][3][0] == (0, [])
    )


def test_index_skips_other_runs_and_expired_messages():
    install()
    state, run_id, nodes = _state_with_nodes(2)
    assert _push(state, run_id, nodes[0], 1, ttl=0.2) == "m1"
    assert _push(state, run_id, nodes[0], 2) == "m2"
    time.sleep(0.3)  # m1 expires while stored
    assert [
        int(m.content["c"]["tag"]) for m in state.get_message_ins(nodes[0], 5, run_id=run_id + 1)
    ] == []
    got = state.get_message_ins(nodes[0], 5, run_id=run_id)
    assert [int(m.content["c"]["tag"]) for m in got] == [2]
    assert all(m.metadata.delivered_at for m in got)
    assert "m1" not in state.message_ins_store  # the expired one was removed on the way
    assert state.__dict__["_fedkt_ins_by_node"][nodes[0]] == []  # and nothing stays indexed
    with pytest.raises(AssertionError):
        state.get_message_ins(nodes[0], 0)


def test_the_sweep_polls_only_nodes_with_messages_and_delivers_like_flowers():
    from flwr.server.superlink.fleet.vce import vce_api

    assert install() and vce_api.add_messages_to_queue is indexed_add_messages_to_queue
    delivered = []
    for sweep in (ORIGINAL["add_messages_to_queue"], indexed_add_messages_to_queue):
        state, run_id, nodes = _state_with_nodes(50)
        for tag, node in enumerate([nodes[3], nodes[40], nodes[3], nodes[7]], 1):
            _push(state, run_id, node, tag)
        polled = []
        get = state.get_message_ins
        state.get_message_ins = lambda node_id, limit: polled.append(node_id) or get(node_id, limit)
        out, stop = queue.Queue(), threading.Event()
        t = threading.Thread(
            target=sweep, args=(state, out, {n: i for i, n in enumerate(nodes)}, stop)
        )
        t.start()
        got = [int(out.get(timeout=5).content["c"]["tag"]) for _ in range(4)]
        stop.set()
        t.join()
        delivered.append(got)
        if sweep is indexed_add_messages_to_queue:
            assert set(polled) <= {nodes[3], nodes[40], nodes[7]}  # never the 47 idle nodes
        else:
            assert len(set(polled)) == 50
    # one message per node per sweep, in the mapping's order, then node 3's second one
    assert delivered[0] == delivered[1] == [1, 4, 2, 3]


def test_the_sweep_delivers_a_message_as_soon_as_it_is_stored():
    """No 0.1 s tick to wait for: a message stored while the sweep pauses is in the
    engine's queue within a few milliseconds; a stop still ends the sweep promptly."""
    assert install()
    state, run_id, nodes = _state_with_nodes(5)
    out, stop = queue.Queue(), threading.Event()
    t = threading.Thread(
        target=indexed_add_messages_to_queue,
        args=(state, out, {n: i for i, n in enumerate(nodes)}, stop),
    )
    t.start()
    waits = []
    for tag in range(1, 21):
        time.sleep(0.013)  # lands at arbitrary points of the sweep's pause
        start = time.perf_counter()
        _push(state, run_id, nodes[tag % 5], tag)
        assert int(out.get(timeout=5).content["c"]["tag"]) == tag
        waits.append(time.perf_counter() - start)
    stopped_at = time.perf_counter()
    stop.set()
    t.join()
    assert time.perf_counter() - stopped_at < 0.5
    # Flower's 0.1 s tick would give a median near 50 ms; waking on arrival, about none.
    assert sorted(waits)[len(waits) // 2] < 0.02, waits


def test_a_stored_reply_sets_the_signal_a_serverapp_waits_on():
    """In a simulation the ServerApp waits on this event between pulls instead of
    sleeping (``server/loop.py``); a grid whose state is elsewhere has none."""
    assert install()
    state, run_id, nodes = _state_with_nodes(2)

    class SimulatedGrid:  # Flower's InMemoryGrid holds its LinkState as ``state``
        pass

    grid = SimulatedGrid()
    grid.state = state  # type: ignore[attr-defined]
    replied = reply_signal(grid)
    assert replied is not None and reply_signal(object()) is None
    other = SimulatedGrid()
    other.state = object()  # type: ignore[attr-defined]  # not an indexed LinkState
    assert reply_signal(other) is None
    _push(state, run_id, nodes[0], 1)
    (ins,) = state.get_message_ins(node_id=nodes[0], limit=1)
    replied.clear()
    reply = Message(RecordDict({"c": ConfigRecord({"tag": 1})}), reply_to=ins)
    reply.metadata.__dict__["_message_id"] = "r1"
    assert state.store_message_res(reply) is not None
    assert replied.is_set()
    replied.clear()
    stale = Message(RecordDict({"c": ConfigRecord({"tag": 2})}), reply_to=ins)
    stale.metadata.__dict__["_message_id"] = "r2"
    stale.metadata.__dict__["_reply_to_message_id"] = "gone"
    assert state.store_message_res(stale) is None  # refused: nothing to wake for
    assert not replied.is_set()
