"""The engine's queues: items flow as through a plain Queue, a get with a timeout wakes
within 0.1 s (so the engine's threads notice a stop), and one without still blocks."""

from __future__ import annotations

import queue
import threading
import time

import pytest

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

    assert install() and install() and vce_api.Queue is PromptQueue
