"""The quiet backoff of processes that can only poll (a deployed ServerApp, a warm
ClientApp worker): hand-computed pauses, and a deployed exchange on a fake clock that
counts its pulls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedkt.polling import quiet_pause
from fedkt.server import loop


@pytest.mark.parametrize(
    ("quiet_for", "expected"),
    [(0.0, 0.02), (-1.0, 0.02), (0.04, 0.02), (0.4, 0.1), (1.0, 0.25), (2.0, 0.5), (60, 0.5)],
)
def test_quiet_pause_is_a_share_of_the_quiet_time_within_floor_and_cap(quiet_for, expected):
    assert quiet_pause(quiet_for, floor=0.02, cap=0.5, share=0.25) == pytest.approx(expected)


def test_a_simulation_polls_by_outstanding_count_only():
    assert loop.poll_pause(3, quiet_for=30.0, deployed=False) == pytest.approx(0.0215)
    assert loop.poll_pause(1000, quiet_for=0.0, deployed=False) == pytest.approx(0.5)


def test_a_deployed_serverapp_slows_down_while_nothing_arrives():
    assert loop.poll_pause(3, 0.0, deployed=True) == pytest.approx(0.0215)  # just pushed
    assert loop.poll_pause(3, 0.8, deployed=True) == pytest.approx(0.1)  # 0.8 / 8
    assert loop.poll_pause(3, 10.0, deployed=True) == pytest.approx(loop.QUIET_POLL_CAP)
    assert loop.poll_pause(1000, 10.0, deployed=True) == pytest.approx(0.5)  # count rules


class _Clock:
    """``time`` for the loop module: ``sleep`` advances ``monotonic``."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Grid:
    """A deployed grid (no in-process LinkState) whose replies come at given times."""

    def __init__(self, clock: _Clock, ready_at: dict[str, float]) -> None:
        self.clock, self.ready_at, self.pulls = clock, ready_at, []

    def push_messages(self, messages):
        return list(self.ready_at)

    def pull_messages(self, ids):
        self.pulls.append(self.clock.now)
        due = [i for i in ids if self.ready_at[i] <= self.clock.now]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in due]


def test_a_deployed_exchange_pulls_less_and_sees_replies_soon(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    grid = _Grid(clock, {"a": 2.0, "b": 2.05, "c": 6.0})
    seen: dict[str, float] = {}
    replies = loop.exchange(
        grid, [], timeout=60, on_reply=lambda m: seen.setdefault(
            m.metadata.reply_to_message_id, clock.now))  # fmt: skip
    assert len(replies) == 3
    # each reply is seen within an eighth of the quiet time before it (0.15 s at most)
    assert 2.0 <= seen["a"] <= 2.0 + 2.0 / 8
    assert 2.05 <= seen["b"] <= 2.05 + 0.15
    assert 6.0 <= seen["c"] <= 6.0 + 0.15
    # polling every 0.0215 s would have taken ~280 pulls for these 6 s; at most one per
    # 0.15 s once quiet, ~40 for the 4 s between b and c
    assert len(grid.pulls) < 90
