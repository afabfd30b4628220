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
    injected_delay,
    leaving_clients,
)
from fedkt.transfer import KNOWLEDGE


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


def test_byzantine_needs_a_knowledge_strategy():
    with pytest.raises(
        ConfigError, match="faults.byzantine: strategy 'fedavg' exchanges no knowledge"
    ):
        resolve(load_config(None, ["strategy=fedavg", "faults.byzantine=0.2"]))


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
