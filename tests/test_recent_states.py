"""A client state read back by the process that wrote (or read) it skips ``torch.load``,
and is never stale: the checkpoint file stays the truth."""

import os

import pytest
import torch

from fedkt import checkpoint
from fedkt.checkpoint import RecentStates, load_client, save_client


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _no_file_reads(monkeypatch) -> None:
    """Any real file read from here on fails the test: what follows must come from memory."""
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: pytest.fail("torch.load called"))


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(checkpoint, "recent_states", RecentStates(1 << 20, max_files=8))
    yield
    checkpoint.recent_states.clear()


def test_a_state_this_process_wrote_is_read_back_from_memory_as_a_copy(tmp_path, monkeypatch):
    state = {"w": torch.arange(4.0)}
    save_client(tmp_path, 0, 3, state)
    state["w"] += 100  # the caller's dict changes after the save: what was saved does not
    _no_file_reads(monkeypatch)
    r, got = load_client(tmp_path, 0, 3)
    assert r == 3 and got["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    got["w"].zero_()  # nor does what a reader does to its copy
    assert load_client(tmp_path, 0, 5)[1]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_file_replaced_by_another_writer_is_read_from_disk(tmp_path):
    save_client(tmp_path, 0, 1, {"w": torch.zeros(3)})
    path = tmp_path / "client-0" / "round-1.pt"
    # Another process (say, the other worker) writes the same round's file its way:
    # a new file renamed over the old one, same size.
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(3)}, other)
    os.replace(other, path)
    assert load_client(tmp_path, 0, 1)[1]["w"].tolist() == [1.0, 1.0, 1.0]


def test_a_file_read_once_is_served_from_memory_next(tmp_path, monkeypatch):
    (tmp_path / "client-2").mkdir()
    torch.save({"w": torch.full((2,), 7.0)}, tmp_path / "client-2" / "round-4.pt")
    assert load_client(tmp_path, 2, 9)[1]["w"].tolist() == [7.0, 7.0]
    _no_file_reads(monkeypatch)
    assert load_client(tmp_path, 2, 9)[1]["w"].tolist() == [7.0, 7.0]


def test_memory_and_open_files_stay_bounded(tmp_path):
    before = _open_fds()
    recent = checkpoint.recent_states  # 1 MiB, 8 files
    for client in range(20):
        for r in (1, 2, 3):  # each client keeps two files; the oldest is forgotten
            save_client(tmp_path, client, r, {"w": torch.zeros(1000)})
    # the newest 8 files, less client 19's round 1, forgotten when its round 3 came
    assert len(recent._entries) == 7 and _open_fds() - before == 7
    save_client(tmp_path, 99, 1, {"w": torch.zeros(40_000)})  # 160 kB: over 1/8 of 1 MiB
    assert str(tmp_path / "client-99" / "round-1.pt") not in recent._entries
    assert load_client(tmp_path, 99, 1)[1]["w"].shape == (40_000,)  # read from disk
    assert str(tmp_path / "client-99" / "round-1.pt") not in recent._entries  # nor kept then
    small = RecentStates(10_000, max_files=50)
    for i in range(12):
        path = tmp_path / f"s{i}.pt"
        torch.save({}, path)
        small.put(path, os.open(path, os.O_RDONLY), {"w": torch.zeros(250)})  # 1 kB each
    assert len(small._entries) == 10  # 10 kB of 10 kB
    assert str(tmp_path / "s0.pt") not in small._entries  # the oldest went first
    small.clear()
    recent.clear()
    assert _open_fds() == before


def test_turned_off_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "recent_states", RecentStates(0))
    before = _open_fds()
    save_client(tmp_path, 0, 1, {"w": torch.zeros(2)})
    assert load_client(tmp_path, 0, 1)[1]["w"].tolist() == [0.0, 0.0]
    assert not checkpoint.recent_states._entries and _open_fds() == before
