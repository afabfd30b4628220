"""Setup that follows the sampled clients: in simulation the engine says which node holds
which partition, and a node gets the handshake only when it is first sampled."""

import json

import pytest

from fedkt.server import node_directory
from fedkt.server.simulation import simulate

pytestmark = pytest.mark.usefixtures("one_engine")


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def test_directory_is_the_engines_mapping_of_exactly_these_nodes():
    from flwr.server.superlink.fleet.vce import vce_api

    node_directory.install()
    assert vce_api._register_nodes is node_directory._wrapped[0]
    assert node_directory.directory(_Grid([1, 2]), timeout=0.01) is None  # nothing registered
    with node_directory._lock:
        node_directory._mapping.update({11: 0, 12: 1})
    node_directory._registered.set()
    assert node_directory.directory(_Grid([12, 11])) == {0: 11, 1: 12}
    # nodes the engine did not register (another simulation's): ask them instead
    assert node_directory.directory(_Grid([11, 12, 13]), timeout=0.1) is None
    node_directory.install()  # before the next simulation: the old mapping is forgotten
    assert node_directory.directory(_Grid([11, 12]), timeout=0.01) is None


def _lines(path):
    keep = lambda k: k not in ("wall_seconds",)  # noqa: E731
    return [
        {k: v for k, v in json.loads(x).items() if keep(k)} for x in path.read_text().splitlines()
    ]


@pytest.mark.slow
def test_only_sampled_clients_get_the_handshake_and_results_match(tmp_path, tiny_cfg, monkeypatch):
    cfg = tiny_cfg("num_clients=20", "fraction=0.1", "min_clients=2", "strategy=knfu")
    lazy = simulate(cfg, str(tmp_path / "lazy"))
    picked = {
        json.loads(x)["client"] for x in (tmp_path / "lazy/metrics.jsonl").read_text().splitlines()
    }
    assert lazy["configured_clients"] == len(picked) <= 2 * cfg.rounds < 20
    monkeypatch.setattr(node_directory, "directory", lambda grid, timeout=30.0: None)
    asked = simulate(cfg, str(tmp_path / "asked"))
    assert asked["configured_clients"] == 20
    assert asked["setup_bytes"] > 5 * lazy["setup_bytes"]
    for name in ("metrics.jsonl", "rounds.jsonl"):
        assert _lines(tmp_path / "lazy" / name) == _lines(tmp_path / "asked" / name), name
