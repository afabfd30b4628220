"""A worker gives the memory a client call freed back to the operating system."""

from __future__ import annotations

import sys

import psutil
import pytest

from fedkt.memory import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_operating_system():
    process = psutil.Process()
    blocks = [bytes(2000) for _ in range(100_000)]  # ~0.2 GB of heap blocks (not mmapped)
    keep = bytes(2000)  # allocated last: the heap cannot shrink from its top alone
    held = process.memory_info().rss
    del blocks
    assert release_freed_memory()
    released = held - process.memory_info().rss
    assert released > 100 * 2**20, f"only {released / 2**20:.0f} MiB returned"
    assert len(keep) == 2000


def test_the_client_app_releases_memory_after_every_call_even_a_failed_one(monkeypatch):
    from clients import app as client_app

    assert client_app.release_memory_after in client_app.app._mods
    released = []
    monkeypatch.setattr(client_app, "release_freed_memory", lambda: released.append(1))
    assert client_app.release_memory_after("msg", "ctx", lambda m, c: f"{m} {c}") == "msg ctx"

    def failing(m, c):
        raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError, match="the handler failed"):
        client_app.release_memory_after("msg", "ctx", failing)
    assert released == [1, 1]
