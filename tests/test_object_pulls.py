"""clients/object_pulls.py: Flower's object pulls retry a missing object after 0.02 s, not 1 s,
in the processes fedkt starts; everything else about the pulls is Flower's."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.inflatable import inflatable_utils as pulls
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from fedkt.clients import object_pulls
from fedkt.errors import FedktError


@pytest.fixture
def flower_defaults(monkeypatch):
    """Let a test change the pull functions' defaults; put Flower's back afterwards."""
    for f in (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(f, "__kwdefaults__", dict(f.__kwdefaults__))


def _late_object(misses: int):
    """A pull function whose object arrives after ``misses`` pulls."""
    calls = []

    def pull(object_id: str) -> bytes:
        calls.append(time.perf_counter())
        if len(calls) <= misses:
            raise ObjectUnavailableError(object_id)
        return b"content"

    return pull, calls


def test_flowers_pace_waits_a_second_for_a_late_object(flower_defaults):
    pull, calls = _late_object(1)
    assert pulls.pull_objects(["a"], pull) == {"a": b"content"}
    assert calls[1] - calls[0] >= 0.7  # 1 s +- 20% jitter: what fedkt's rounds paid


def test_installed_pace_retries_at_once_and_backs_off_to_a_second(flower_defaults):
    assert object_pulls.install(0.02)
    pull, calls = _late_object(3)
    started = time.perf_counter()
    assert pulls.pull_objects(["a"], pull) == {"a": b"content"}
    assert time.perf_counter() - started < 0.5  # 0.02 + 0.04 + 0.08 s, +- 20%
    assert len(calls) == 4
    kw = pulls.pull_and_inflate_object_from_tree.__kwdefaults__
    assert kw["initial_backoff"] == 0.02 and kw["backoff_cap"] == 1.0
    assert object_pulls.install(2.0)  # a pace slower than the cap keeps its own value
    assert pulls.pull_objects.__kwdefaults__["backoff_cap"] == 2.0


def test_the_environment_sets_the_pace(flower_defaults, monkeypatch):
    monkeypatch.setenv("FEDKT_PULL_BACKOFF", "0.5")
    assert object_pulls.install()
    assert pulls.pull_objects.__kwdefaults__["initial_backoff"] == 0.5
    monkeypatch.delenv("FEDKT_PULL_BACKOFF")
    assert object_pulls.backoff_seconds() == object_pulls.DEFAULT_BACKOFF


@pytest.mark.parametrize("value", ["abc", "0", "-1", "11"])
def test_a_bad_pace_is_one_line(monkeypatch, value):
    monkeypatch.setenv("FEDKT_PULL_BACKOFF", value)
    with pytest.raises(
        FedktError, match=rf"FEDKT_PULL_BACKOFF must be seconds in \(0, 10\], got '{value}'"
    ):
        object_pulls.install()


def test_another_flowers_pull_functions_are_left_alone(flower_defaults, monkeypatch):
    monkeypatch.setattr(pulls.pull_objects, "__kwdefaults__", {"max_time": 1.0})
    before = dict(pulls.pull_and_inflate_object_from_tree.__kwdefaults__)
    assert not object_pulls.install(0.02)
    assert pulls.pull_and_inflate_object_from_tree.__kwdefaults__ == before
