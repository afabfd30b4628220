"""Methods: one short file each, named nowhere else, and a user's own method runs too."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import tiny

from fedkt.config import load_config
from fedkt.experiment import resolve, strategy_names
from fedkt.method import METHODS

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"
PACKAGE = ("fedkt", "server", "clients", "strategies")
TINY = [*tiny.TINY, "train.epochs=1"]


def _method_files() -> list[Path]:
    return sorted(p for p in (ROOT / "fedkt" / "methods").glob("*.py") if p.name != "__init__.py")


def test_every_builtin_method_is_one_short_file():
    files = _method_files()
    assert {p.stem for p in files} <= set(strategy_names())
    assert len(files) == 23
    for path in files:
        assert len(path.read_text().splitlines()) < 150, path.name


def test_no_code_outside_a_method_file_names_the_method():
    """Nothing branches on a method's name: no string literal equal to a built-in method's
    name appears in the package outside that method's own file (the config's default
    strategy is data, not a branch)."""
    names = {p.stem for p in _method_files()}
    found = []
    for folder in PACKAGE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and node.value in names
                    and path.stem != node.value
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    # the schemas' defaults (the default strategy, the comparison's reference) are data;
    # Ray's own address keyword for a new instance happens to be spelled like a method
    allowed = {
        ("fedkt/config.py", "'knfu'"),
        ("fedkt/compare.py", "'local'"),
        ("server/simulation.py", "'local'"),
    }
    assert all((f.split(":")[0], f.split(": ")[-1]) in allowed for f in found), found


@pytest.fixture
def plugins(monkeypatch):
    """The example plugin importable here and in simulation workers; the registries are
    restored afterwards so the plugin's names do not leak into other tests."""
    import sys

    from fedkt.transfer import FUSIONS

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", str(PLUGINS))
    saved = dict(METHODS._items), dict(FUSIONS._items)
    yield
    METHODS._items, FUSIONS._items = saved
    sys.modules.pop("median_kd", None)


def test_median_fusion_by_hand(plugins):
    from median_kd import median_target

    probs = np.array([[[0.6, 0.4]], [[0.2, 0.8]], [[0.5, 0.5]]])
    # medians 0.5 and 0.5 -> already normalised
    np.testing.assert_allclose(median_target(probs), [[0.5, 0.5]])
    probs = np.array([[[0.7, 0.3]], [[0.1, 0.9]], [[0.6, 0.4]], [[0.2, 0.8]]])
    # medians (0.4, 0.6) -> sum 1.0
    np.testing.assert_allclose(median_target(probs), [[0.4, 0.6]])


def test_plugin_method_registers_and_runs_in_the_simulation(tmp_path, plugins):
    """A method defined in a test module, named in ``plugins``, is registered in this
    process and in every simulation worker, and runs end to end through Flower."""
    from fedkt.server.simulation import simulate

    exp = resolve(load_config(None, [*TINY, "plugins=[median_kd]", "strategy=median_kd"]))
    assert "median_kd" in METHODS and exp.parts == {
        "knowledge": "soft_labels",
        "fusion": "median",
        "loss": "kl",
    }
    assert exp.method.anchor_weight(exp) == 0.5
    summary = simulate(exp, str(tmp_path / "run"))
    assert (
        summary["strategy"] == "median_kd"
        and summary["fusion"] == "median"
        and summary["rounds"] == 2
    )
    assert summary["alma"] is not None and summary["alma"] > 0.3
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 8 and all(np.isfinite(r["distill_loss"]) for r in rows)


def test_client_messages_resolve_once_and_build_each_model_once(monkeypatch, task_identity):
    """Per process, the experiment is resolved once for all messages, and each model is
    built once (then reused, weights loaded per client)."""
    from flwr.app import ConfigRecord, MessageType, RecordDict

    from fedkt import experiment, learner
    from fedkt import protocol as P
    from fedkt.clients import app as client_app

    counts = {"resolve": 0, "build": 0}
    real_resolve, real_build = experiment.resolve, learner.build_model

    def counting_resolve(cfg):
        counts["resolve"] += 1
        return real_resolve(cfg)

    def counting_build(*args, **kwargs):
        counts["build"] += 1
        return real_build(*args, **kwargs)

    experiment.experiment_from_json.cache_clear()
    monkeypatch.setattr(experiment, "resolve", counting_resolve)
    monkeypatch.setattr(learner, "build_model", counting_build)
    monkeypatch.setattr(client_app, "POOL", learner.ModelPool())
    cfg = load_config(None, [*TINY, "model.name=cnn-small", "model.student=mlp"])
    nodes = tiny.ClientNodes((0, 1))
    contexts, send = nodes.contexts, nodes.send

    hello = RecordDict({P.EXPERIMENT: ConfigRecord({P.EXPERIMENT_KEY: cfg.to_json()})})
    for pid in contexts:
        assert int(send(MessageType.QUERY, hello, pid).content[P.METRICS][P.PARTITION_ID]) == pid
    for server_round in (1, 2, 3):
        assert all(np.isfinite(m["distill_loss"]) for m in nodes.knowledge_round(server_round))
    assert counts == {"resolve": 1, "build": 2}  # a teacher and a student architecture
    # the two clients kept their own weights although they shared the pooled modules
    w0, w1 = (contexts[p].state[P.STATE_MODEL].to_torch_state_dict() for p in (0, 1))
    assert any(not np.array_equal(w0[k].numpy(), w1[k].numpy()) for k in w0)


@pytest.mark.parametrize("name", [p.stem for p in _method_files()])
def test_every_method_resolves_and_describes_itself(name):
    exp = resolve(load_config(None, [*TINY, f"strategy={name}"]))
    m = METHODS.create(name)
    assert exp.method is m and m.description and m.exchanges
    assert exp.exchanges_knowledge == (m.knowledge is not None)
