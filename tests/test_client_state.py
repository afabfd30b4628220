"""Where a client's model lives between its calls: in the node's state (Flower's Context,
which the simulation engine keeps in the driver process and ships with every message), or,
where the server says every node shares the disk (a simulation on one machine), in the
client's checkpoint file only, the node's state holding its round. Both give the same
model, message for message; a state file gone is one clear error."""

from __future__ import annotations

import pytest
from tiny import TINY, ClientNodes

from fedkt import protocol as P
from fedkt.checkpoint import CheckpointError
from fedkt.config import load_config
from fedkt.server import loop


def _client_run(tmp_path, on_disk: bool, rounds: int = 3):
    """Two clients of FKD (train, then distil the mean of their soft labels) driven
    through the ClientApp's own handlers; returns their contexts and replies."""
    from flwr.app import ConfigRecord, MessageType, RecordDict

    cfg = load_config(None, [*TINY, "strategy=fkd"])
    nodes = ClientNodes((0, 1))
    contexts, send = nodes.contexts, nodes.send
    experiment = ConfigRecord(
        {
            P.EXPERIMENT_KEY: cfg.to_json(),
            P.CHECKPOINT_DIR: str(tmp_path / "clients"),
            P.STATE_ON_DISK: on_disk,
        }
    )
    for pid in contexts:
        send(MessageType.QUERY, RecordDict({P.EXPERIMENT: experiment}), pid)
    replies = [m for r in range(1, rounds + 1) for m in nodes.knowledge_round(r)]
    return contexts, replies


def test_on_disk_the_node_state_holds_a_round_and_the_numbers_are_the_same(tmp_path, task_identity):
    from fedkt.clients import app as client_app

    kept, by_context = _client_run(tmp_path / "context", on_disk=False)
    disk, by_disk = _client_run(tmp_path / "disk", on_disk=True)
    assert by_disk == by_context  # every metric of every call, bit for bit
    for pid in (0, 1):
        assert P.STATE_MODEL in kept[pid].state
        assert P.STATE_MODEL not in disk[pid].state  # no model in the engine's copy
        assert disk[pid].state[P.STATE_CONFIG][P.STATE_ROUND] == 3
        a = kept[pid].state[P.STATE_MODEL].to_torch_state_dict()
        b = client_app._kept_state(disk[pid])
        assert list(a) == list(b) and all(a[k].equal(b[k]) for k in a)


def test_a_state_file_gone_is_one_clear_error(tmp_path, task_identity):
    from fedkt.clients import app as client_app

    disk, _ = _client_run(tmp_path, on_disk=True, rounds=1)
    for path in (tmp_path / "clients" / "client-1").iterdir():
        path.unlink()
    with pytest.raises(
        CheckpointError, match=r"client 1's state of round 1 is gone from .*clients"
    ):
        client_app._kept_state(disk[1])
    assert client_app._kept_state(disk[0]) is not None


def test_the_server_keeps_models_on_disk_only_for_a_simulation_on_one_machine(tiny_cfg):
    assert loop.keeps_state_on_disk(tiny_cfg(), simulated=True)
    assert not loop.keeps_state_on_disk(tiny_cfg(), simulated=False)  # deployed SuperNodes
    cluster = tiny_cfg("simulation.ray_address=auto")
    assert not loop.keeps_state_on_disk(cluster, simulated=True)  # another machine per round
