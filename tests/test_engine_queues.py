"""The engine's queues: items flow as through a plain Queue, a get with a timeout wakes
within 0.1 s (so the engine's threads notice a stop), one without still blocks, and the
run's stop wakes its waiting threads at once."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from fedkt.server import engine_queues
from fedkt.server.engine_queues import WAKE, PromptQueue, install


def test_items_flow_as_through_a_plain_queue():
    q = PromptQueue()
    for i in range(5):
        q.put(i)
    assert [q.get(timeout=1.0) for _ in range(5)] == list(range(5))


def test_a_get_with_a_timeout_wakes_within_the_wake_interval():
    q = PromptQueue()
    start = time.perf_counter()
    with pytest.raises(queue.Empty):
        q.get(timeout=1.0)  # the engine's worker waits like this between messages
    assert time.perf_counter() - start < WAKE + 0.2


def test_a_get_without_a_timeout_still_blocks_until_an_item_arrives():
    q = PromptQueue()
    threading.Timer(0.3, q.put, args=("late",)).start()
    start = time.perf_counter()
    assert q.get() == "late" and time.perf_counter() - start >= 0.25


def test_install_gives_the_engine_the_prompt_queue():
    from flwr.server.superlink.fleet.vce import vce_api

    assert install() and install()
    assert isinstance(vce_api.Queue(), PromptQueue)
    assert vce_api.run_api.__wrapped__ is not None  # the run's stop wakes its queues


def test_wake_ends_the_gets_waiting_now_and_no_later_ones():
    q = PromptQueue()
    ended = []

    def wait() -> None:
        try:
            q.get(timeout=1.0)
        except queue.Empty:
            ended.append(time.perf_counter())

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.03)
    q.wake()
    t.join()
    assert len(ended) == 1
    start = time.perf_counter()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)  # a get after the wake waits its time as before
    assert time.perf_counter() - start >= 0.04
    q.put("item")
    assert q.get(timeout=1.0) == "item"


def test_the_runs_stop_wakes_its_threads_and_leaves_other_runs_alone(monkeypatch):
    """A ``run_api`` of Flower's signature whose threads wait on its queues: once the
    run's stop event is set they are all woken (a get of another run's queue is not)."""
    from fedkt.server.linkstate_index import _arrived

    monkeypatch.setattr(engine_queues, "WAKE", 60.0)  # only the wake can end a wait in time

    class State:
        pass

    class Factory:
        def __init__(self) -> None:
            self.the_state = State()

        def state(self) -> State:
            return self.the_state

    woken: list[str] = []

    def flower_like_run_api(  # same parameter names as Flower's
        app_fn, backend_fn, nodes_mapping, state_factory, node_info_stores, f_stop, metrics
    ) -> None:
        queues = [engine_queues._queue_of_this_run(), engine_queues._queue_of_this_run()]

        def waiting(i: int) -> None:
            while not f_stop.is_set():
                try:
                    queues[i].get(timeout=30.0)
                except queue.Empty:
                    pass
            woken.append(f"queue {i}")

        threads = [threading.Thread(target=waiting, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    other = engine_queues._queue_of_this_run()  # built outside any run
    run_api = engine_queues._waking_run_api(flower_like_run_api)
    f_stop, factory = threading.Event(), Factory()
    sweep = _arrived(factory.the_state)
    runner = threading.Thread(target=run_api, args=(None, None, {}, factory, {}, f_stop, None))
    runner.start()
    time.sleep(0.05)
    assert not sweep.is_set() and not woken
    f_stop.set()
    runner.join(timeout=5)
    assert not runner.is_alive() and sorted(woken) == ["queue 0", "queue 1"]
    assert sweep.is_set()  # the message sweep's pause ends too
    assert other._woken == 0
