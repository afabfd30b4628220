"""Injected faults and attacks: pure decisions and corruptions, then whole runs through
Flower's simulation engine that must finish with the survivors and record what happened."""

import json

import numpy as np
import pytest

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.faults import (
    ClientCrash,
    byzantine_clients,
    corrupt_knowledge,
    corrupt_weights,
    injected_delay,
    leaving_clients,
)
from fedkt.transfer import KNOWLEDGE

pytestmark = pytest.mark.usefixtures("one_engine")  # the whole runs share one engine


def test_attackers_and_leavers_are_seeded_fractions():
    cfg = load_config(None, ["faults.byzantine=0.2", "faults.leave=0.3"])
    assert len(byzantine_clients(cfg)) == 2 and len(leaving_clients(cfg)) == 3
    assert byzantine_clients(cfg) == byzantine_clients(load_config(None, ["faults.byzantine=0.2"]))
    assert byzantine_clients(
        load_config(None, ["faults.byzantine=0.2", "seed=1"])
    ) != byzantine_clients(cfg)
    assert byzantine_clients(load_config(None)) == frozenset()


def _crash_pattern(cfg, rounds: int = 40) -> list:
    """Client 0's train calls over ``rounds`` rounds: the injected delay, or None for a crash."""
    out = []
    for r in range(1, rounds + 1):
        try:
            out.append(injected_delay(cfg, 0, r, "train"))
        except ClientCrash:
            out.append(None)
    return out


def test_injected_crashes_leaves_and_stragglers():
    cfg = load_config(None, ["faults.leave=0.1", "faults.leave_round=3"])
    (gone,) = leaving_clients(cfg)
    assert injected_delay(cfg, gone, 2, "train") == 0.0
    with pytest.raises(ClientCrash, match="left the federation in round 3"):
        injected_delay(cfg, gone, 3, "evaluate")
    crashy = load_config(None, ["faults.crash=0.5"])
    outcomes = _crash_pattern(crashy)
    assert 8 < outcomes.count(None) < 32  # about half
    assert _crash_pattern(crashy) == outcomes  # reproducible
    late = load_config(None, ["faults.straggle=1.0", "round_timeout=5"])
    assert injected_delay(late, 1, 1, "train") == 7.0
    assert (
        injected_delay(
            load_config(None, ["faults.straggle=1.0", "faults.straggle_seconds=0.5"]), 1, 1, "train"
        )
        == 0.5
    )


def test_corrupted_knowledge_hand_computed_and_well_formed():
    p = np.array([[0.7, 0.2, 0.1]])
    flip_cfg = load_config(None, ["faults.attack=flip"]).faults
    np.testing.assert_allclose(
        corrupt_knowledge(p, "probs", flip_cfg, np.random.default_rng(0)),
        [[0.1, 0.2, 0.7]],
        atol=1e-6,
    )
    scale = load_config(None, ["faults.attack=scale", "faults.attack_scale=2"]).faults
    # softmax(2 log p) = p^2 / sum p^2 = [0.49, 0.04, 0.01] / 0.54
    np.testing.assert_allclose(
        corrupt_knowledge(p, "probs", scale, np.random.default_rng(0)),
        [[0.49 / 0.54, 0.04 / 0.54, 0.01 / 0.54]],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        corrupt_knowledge(np.array([[1.0, -2.0]]), "logits", scale, np.random.default_rng(0)),
        [[2.0, -4.0]],
    )
    noise = load_config(None).faults  # attack: random
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=50).astype(np.float32)
    bad = corrupt_knowledge(probs, "probs", noise, np.random.default_rng(2))
    assert not np.allclose(bad, probs)
    KNOWLEDGE.create("soft_labels").validate(bad, None, 50, 10)  # passes the server's format checks


def test_corrupted_weights_hand_computed_and_well_formed():
    """Attacks on the update from the model the client was sent: start (1, 2 | 0), after
    honest training (2, 0 | 1), so delta = (1, -2 | 1)."""
    start = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.0], np.float32)}
    trained = {
        "w": np.array([2.0, 0.0], np.float32),
        "b": np.array([1.0], np.float32),
        "steps": np.array([5], np.int64),  # BatchNorm's counter: sent as it is
    }
    start["steps"] = np.array([3], np.int64)

    def attacked(*overrides, seed=0):
        faults = load_config(None, list(overrides)).faults
        return corrupt_weights(trained, start, faults, np.random.default_rng(seed))

    flipped = attacked("faults.attack=flip")  # start - delta
    np.testing.assert_array_equal(flipped["w"], [0.0, 4.0])
    np.testing.assert_array_equal(flipped["b"], [-1.0])
    scaled = attacked("faults.attack=scale", "faults.attack_scale=3")  # start + 3 delta
    np.testing.assert_array_equal(scaled["w"], [4.0, -4.0])
    np.testing.assert_array_equal(scaled["b"], [3.0])
    for out in (flipped, scaled):
        assert {k: v.dtype for k, v in out.items()} == {k: v.dtype for k, v in trained.items()}
        assert out["steps"].tolist() == [5]
    # random: N(0, (scale * rms(delta))^2) per tensor; rms(w's delta) = sqrt(5/2), b's = 1
    noisy = attacked("faults.attack=random", "faults.attack_scale=2", seed=7)
    draw = np.random.default_rng(7)
    np.testing.assert_allclose(noisy["w"], start["w"] + draw.normal(0, 2 * np.sqrt(2.5), 2))
    np.testing.assert_allclose(noisy["b"], start["b"] + draw.normal(0, 2.0, 1))
    assert noisy["w"].dtype == np.float32


def test_byzantine_needs_a_strategy_that_sends_something():
    with pytest.raises(
        ConfigError,
        match="faults.byzantine: strategy 'local' sends neither knowledge nor weights",
    ):
        resolve(load_config(None, ["strategy=local", "faults.byzantine=0.2"]))
    resolve(load_config(None, ["strategy=fedavg", "faults.byzantine=0.2"]))  # poisoned weights


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["strategy=krum", "num_clients=4", "strategy.params.num_malicious_nodes=1"],
            "strategy.params.num_malicious_nodes: krum withstands 1 attacker(s) only with at "
            "least 5 clients per round; this run samples 4",
        ),
        (
            ["strategy=bulyan", "num_clients=10", "strategy.params.num_malicious_nodes=2"],
            "withstands 2 attacker(s) only with at least 11 clients per round; this run samples 10",
        ),
        (
            [
                "strategy=krum",
                "num_clients=10",
                "fraction=0.4",
                "strategy.params.num_malicious_nodes=1",
            ],
            "only with at least 5 clients per round; this run samples 4",
        ),
        (
            ["strategy=krum", "strategy.params.num_malicious_nodes=1.5"],
            "strategy.params.num_malicious_nodes: num_malicious_nodes must be an integer >= 0",
        ),
        (
            ["strategy=multikrum", "strategy.params.num_nodes_to_select=0"],
            "num_nodes_to_select must be an integer >= 1, got 0",
        ),
        (
            ["strategy=fedtrimmedavg", "strategy.params.beta=0.5"],
            "strategy.params.beta: beta (the fraction cut at each end) must be in [0, 0.5)",
        ),
    ],
)
def test_a_defence_not_in_force_is_refused(overrides, message):
    with pytest.raises(ConfigError) as info:
        resolve(load_config(None, overrides))
    assert message in str(info.value)


def test_multikrum_keeps_every_client_krum_can_by_default():
    exp = resolve(load_config(None, ["strategy=multikrum", "num_clients=10"]))
    assert exp.method.averaging_params(exp) == {"num_malicious_nodes": 0, "num_nodes_to_select": 10}
    f2 = ["strategy=multikrum", "num_clients=10", "strategy.params.num_malicious_nodes=2"]
    exp = resolve(load_config(None, f2))
    assert exp.method.averaging_params(exp)["num_nodes_to_select"] == 8
    exp = resolve(
        load_config(None, ["strategy=multikrum", "strategy.params.num_nodes_to_select=3"])
    )
    assert exp.method.averaging_params(exp)["num_nodes_to_select"] == 3


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_rounds_finish_with_survivors_and_record_faults(tiny_cfg, tmp_path):
    from fedkt.server.simulation import simulate

    # 4 clients: one attacker (flip), crashes, and half the clients gone from round 3,
    # where 2 replies < min_clients = 3 skips the round.
    cfg = tiny_cfg(
        "rounds=3",
        "min_clients=3",
        "faults.crash=0.15",
        "faults.leave=0.5",
        "faults.leave_round=3",
        "faults.byzantine=0.25",
        "faults.attack=flip",
    )
    summary = simulate(cfg, str(tmp_path))
    rounds = _lines(tmp_path / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(
        {"sampled", "replied", "failed", "participants", "rejected_reasons"} <= set(r)
        for r in rounds
    )
    assert all(r["replied"] + r["failed"] == r["sampled"] == 4 for r in rounds)
    assert (
        rounds[2]["skipped"]
        and "min_clients is 3" in rounds[2]["note"]
        and rounds[2]["failed"] >= 2
    )
    assert sum(r["failed"] for r in rounds) >= 2
    assert (
        summary["byzantine_clients"] == sorted(byzantine_clients(cfg)) and "honest_alma" in summary
    )
    honest = [r for r in rounds if r.get("honest_alma") is not None]
    assert honest


@pytest.mark.slow
def test_stragglers_past_the_timeout_are_left_behind(tiny_cfg, tmp_path):
    from fedkt.server.simulation import simulate

    # A straggler holds its simulation worker while it stalls: give every client its own
    # worker (4 x 0.5 CPU) so the punctual ones are not queued behind it. The timeout leaves
    # a punctual client room on a loaded machine (with 8 s, every client of a round once
    # missed it under load, and the test failed); the stall is well past it.
    cfg = tiny_cfg(
        "rounds=2",
        "round_timeout=20",
        "faults.straggle=0.3",
        "faults.straggle_seconds=30",
        "simulation.num_cpus_per_client=0.5",
    )
    simulate(cfg, str(tmp_path))
    rounds = _lines(tmp_path / "rounds.jsonl")
    assert len(rounds) == 2 and sum(r["failed"] for r in rounds) >= 1
    assert all(r["participants"] >= 1 for r in rounds)
    assert all(r["replied"] + r["failed"] == r["sampled"] == 4 for r in rounds)


@pytest.mark.slow
def test_poisoned_weights_break_fedavg_and_not_the_defences(tiny_cfg, tmp_path):
    """2 of 7 clients send their update boosted 10x (model replacement). Measured on
    digits, alpha 5, 3 rounds (honest clients' ALMA): FedAvg 0.91 clean -> 0.34
    attacked; coordinate-wise median 0.91, Multi-Krum (f = 2) 0.89 attacked."""
    from fedkt.server.shared_engine import shared_engine
    from fedkt.server.simulation import simulate

    setting = ["num_clients=7", "rounds=3", "partition.alpha=5"]
    attack = ["faults.byzantine=0.3", "faults.attack=scale", "faults.attack_scale=10"]

    def honest_alma(name, *overrides):
        summary = simulate(tiny_cfg(*setting, *overrides), str(tmp_path / name))
        return summary.get("honest_alma", summary["alma"])

    with shared_engine():  # one Ray start for the four runs
        clean = honest_alma("clean", "strategy=fedavg")
        poisoned = honest_alma("fedavg", "strategy=fedavg", *attack)
        median = honest_alma("median", "strategy=fedmedian", *attack)
        krum = honest_alma(
            "multikrum", "strategy=multikrum", "strategy.params.num_malicious_nodes=2", *attack
        )
    assert poisoned < clean - 0.3, (clean, poisoned)
    assert median > poisoned + 0.3 and krum > poisoned + 0.3, (poisoned, median, krum)


def test_a_lost_experiment_is_read_from_train_and_evaluate_replies(task_identity):
    """A node can restart between a round's train and evaluate calls: its evaluate reply
    then says it has lost the experiment, and the server must hear that too."""
    from flwr.app import Message, RecordDict
    from flwr.app.error import Error

    from fedkt.errors import MissedHandshake
    from fedkt.server.loop import _lost_state

    def reply(node: int, kind: str, reason: str | None) -> Message:
        sent = Message(RecordDict(), dst_node_id=node, message_type=kind)
        if reason is None:
            return Message(RecordDict(), reply_to=sent)
        return Message(Error(code=0, reason=reason), reply_to=sent)

    nodes = {0: 10, 1: 11, 2: 12, 3: 13}  # partition -> node
    lost = str(MissedHandshake("restarted"))
    replies = [
        reply(10, "train", None),
        reply(11, "train", lost),  # restarted before train
        reply(12, "evaluate", lost),  # restarted between train and evaluate
        reply(13, "evaluate", "ClientApp raised an exception"),  # another failure
        reply(99, "evaluate", lost),  # not a node of this run
    ]
    assert _lost_state(replies, nodes) == {1, 2}


@pytest.mark.slow
def test_a_client_whose_node_restarts_rejoins_from_its_checkpoint(tiny_cfg, tmp_path, caplog):
    """A SuperNode restarted mid-run has lost the experiment and its model. It fails the
    round it restarts in; the server sends it the experiment again when next sampled, with
    the last finished round, and it takes part again from its own newest checkpoint
    (seed 0: client 0 restarts in round 1, client 1 in round 2)."""
    from fedkt.faults import node_restarts
    from fedkt.server.simulation import simulate

    cfg = tiny_cfg("rounds=3", "faults.restart=0.25")
    restarts = [(p, r) for r in (1, 2, 3) for p in range(4) if node_restarts(cfg, p, r)]
    assert restarts == [(0, 1), (1, 2)]
    summary = simulate(cfg, str(tmp_path), verbose=True)  # (the server's warnings too)
    rounds = _lines(tmp_path / "rounds.jsonl")
    clients = {
        r: {row["client"] for row in _lines(tmp_path / "metrics.jsonl") if row["round"] == r}
        for r in (1, 2, 3)
    }
    assert [r["failed"] for r in rounds] == [1, 1, 0]
    assert clients == {1: {1, 2, 3}, 2: {0, 2, 3}, 3: {0, 1, 2, 3}}  # back the next round
    assert summary["rounds"] == 3
    said = caplog.text
    assert "round 1: client(s) 0 lost their state" in said
    assert "round 2: client(s) 1 lost their state" in said
    # client 0 had saved nothing yet; client 1 restores its round-1 checkpoint
    assert "client 0 has no checkpoint up to round 1" in said
    assert "client 1 has no checkpoint" not in said
