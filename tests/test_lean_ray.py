"""The lean local Ray instance's switch (fedkt.server.lean_ray): what it changes, where,
and that it leaves a Ray it was not written against alone. Whether a simulation's numbers
stay the same is checked end to end in tests/test_shared_engine.py."""

import pytest
from ray._private import node, parameter

from fedkt.server import lean_ray


@pytest.fixture
def fresh(monkeypatch):
    """No cached class: each test builds it against the Ray it sees."""
    monkeypatch.setattr(lean_ray, "_classes", [])


@pytest.fixture
def started(fresh, monkeypatch):
    """Ray's ``Node`` records the parameters it is given instead of starting anything."""
    seen: dict = {}

    def record(self, ray_params, head=False, shutdown_at_exit=True, connect_only=False, **kw):
        seen.update(
            head=head, no_monitor=ray_params.no_monitor, log_monitor=ray_params.include_log_monitor
        )

    monkeypatch.setattr(node.Node, "__init__", record)
    return seen


def test_the_head_node_starts_without_monitor_api_server_and_log_monitor(started):
    with lean_ray.lean_local_ray() as active:
        assert active
        lean = node.Node
        assert lean is lean_ray._classes[0]  # swapped for the block
        lean(parameter.RayParams(), head=True, shutdown_at_exit=False)
    assert started == {"head": True, "no_monitor": True, "log_monitor": False}
    assert lean.start_api_server(object.__new__(lean), include_dashboard=False) is None
    assert node.Node is lean.__mro__[1]  # Ray's own class is back after the block


def test_the_log_monitor_stays_when_workers_print_to_the_driver(started):
    with lean_ray.lean_local_ray(log_to_driver=True):
        node.Node(parameter.RayParams(), head=True)
    assert started["log_monitor"] is None  # untouched: Ray's default (started)


def test_a_node_joining_a_cluster_is_left_as_it_is(started):
    with lean_ray.lean_local_ray():
        node.Node(parameter.RayParams(), head=False, connect_only=True)
    assert started == {"head": False, "no_monitor": False, "log_monitor": None}


def test_a_ray_it_was_not_written_against_is_left_alone(fresh, monkeypatch):
    monkeypatch.delattr(node.Node, "start_monitor")  # e.g. a Ray that renamed it
    original = node.Node
    with lean_ray.lean_local_ray() as active:
        assert not active
        assert node.Node is original


def test_the_swap_is_undone_when_ray_init_fails(fresh):
    original = node.Node
    with pytest.raises(RuntimeError), lean_ray.lean_local_ray():
        raise RuntimeError("ray.init failed")
    assert node.Node is original
