"""Config validation: every mistake is one line naming the field."""

import subprocess
import sys

import pytest

from fedkt.config import build_config, load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rounds=0"], "rounds: Input should be greater than or equal to 1 (got 0)"),
        (["partition.alpha=-1"], "partition.alpha: Input should be greater than 0"),
        (["partition.alhpa=1"], "partition.alhpa: unknown field"),
        (["roundz=3"], "roundz: unknown field"),
        (["num_clients=ten"], "num_clients: Input should be a valid integer"),
        (
            ["strategy=nope"],
            "unknown strategy 'nope' (choose one of: bulyan, dsfl, fd, fd_local, fedadam, fedavg, "
            "feddf, fedgen, fedgh, fedkd, fedmd, fedmedian, fedproto, fedproto_local, fedprox, "
            "fedtgp, fedtrimmedavg, fkd, fml, knfu, knfu_rel, krum, local, multikrum)",
        ),
        (
            [
                "strategy=fedavg",
                "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]",
            ],
            "strategy 'fedavg' averages model weights, so every client needs the same architecture",
        ),
        (
            ["strategy=fedprox", "strategy.params.mu=1"],
            "strategy.params: strategy 'fedprox' has no parameter 'mu' (accepts: proximal_mu)",
        ),
        (
            ["strategy=fkd", "strategy.loss=ce_kl"],
            "strategy.loss: 'ce_kl' needs labels on the transfer set; set transfer.labelled: true",
        ),
        (
            ["strategy=fkd", "strategy.loss=mae"],
            "strategy.loss: 'mae' needs logits targets but 'soft_labels' knowledge gives probs",
        ),
        (
            ["strategy=fedmd", "strategy.fusion=knfu"],
            "strategy.fusion: 'knfu' cannot fuse 'logits' knowledge",
        ),
        (["strategy=fkd", "strategy.loss=proto"], "strategy.loss: 'proto' needs embedding targets"),
        (["strategy.fusion=nope"], "strategy.fusion: unknown fusion 'nope'"),
        (
            ["strategy.fusion_params.betta=2"],
            "strategy.fusion_params: fusion 'knfu' has no parameter 'betta' (accepts: beta, "
            "threshold, top_k, include_self, scale)",
        ),
        (
            ["strategy=local", "strategy.fusion=mean"],
            "strategy.fusion: strategy 'local' exchanges no knowledge",
        ),
        (["model=transformer"], "unknown model 'transformer'"),
        (["dataset=imagenet"], "dataset: unknown dataset 'imagenet'"),
        (["model.tiers=[{name: mlp, fraction: 0.3}]"], "tier fractions must sum to 1"),
        (["min_clients=20"], "min_clients (20) exceeds num_clients (10)"),
        (["partition.name=weird"], "partition.name: Input should be"),
        (["rounds"], "expected KEY=VALUE"),
        (["strategy=feddf", "strategy.fusion=kd_dp"], "the server step of 'feddf' needs"),
        (
            ["strategy=feddf", "strategy.params.subset=10"],
            "strategy.params: strategy 'feddf' has no parameter 'subset'",
        ),
        (
            ["strategy=fedmd", "strategy.params.subset=0"],
            "strategy.params.subset: subset must be an integer >= 1",
        ),
        (
            ["strategy=fedmd", "strategy.transfer_subset=10"],
            "strategy.transfer_subset is now part of strategy.params",
        ),
        (["strategy=fedprox", "strategy.params.proximal_mu=-1"], "must be a number >= 0"),
        (["strategy=fedprox", "strategy.params.proximal_mu=abc"], "must be a number >= 0"),
        (["plugins=['not a module']"], "plugins: 'not a module' is not a module name"),
        (["plugins=[no_such_fedkt_plugin]"], "plugins: cannot import 'no_such_fedkt_plugin'"),
        (
            [
                "strategy=fedproto",
                "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-fedavg, fraction: 0.5}]",
            ],
            "one embedding size",
        ),
        (
            ["strategy=fd", "strategy.fusion=mean"],
            "strategy.fusion: 'mean' cannot fuse 'class_logits'",
        ),
        (["strategy.fusion_params.include_self=maybe"], "include_self must be true or false"),
        (["strategy.fusion_params.top_k=1.5"], "top_k must be an integer"),
        (["rounds.x=1"], "rounds: Input should be a valid integer (got a section)"),
        (
            ["strategy.loss_params=3"],
            "strategy.loss_params: Input should be a valid dictionary (got 3)",
        ),
        (
            ["strategy.fusion=sade"],
            "strategy.fusion: 'sade' learns from 2 view(s) of each transfer sample; set "
            "transfer.views: 2",
        ),
        (["transfer.views=3"], "transfer.views: Input should be less than or equal to 2"),
        (
            [
                "strategy=fkd",
                "strategy.loss=gt_weighted",
                "transfer.labelled=true",
                "strategy.loss_params.alpha=often",
            ],
            "alpha must be a number in [0, 1] or 'auto'",
        ),
        (
            ["strategy=fedavg", "model.student=mlp"],
            "model.student: strategy 'fedavg' averages model weights; teacher/student clients "
            "need a knowledge-based strategy",
        ),
        (["model.student=gpt"], "model.student: unknown model 'gpt'"),
        (
            ["model.evaluates=student"],
            "model.evaluates: 'student' needs a student model (set model.student)",
        ),
        (
            ["model.student=mlp", "model.student_loss=proto"],
            "model.student_loss: 'proto' distils embeddings",
        ),
        (
            ["model.student=mlp", "model.student_loss=nope"],
            "model.student_loss: unknown loss 'nope'",
        ),
        (
            [
                "model.student=mlp",
                "model.student_loss_params.alpha=2",
                "model.student_loss=gt_weighted",
            ],
            "model.student_loss_params: loss 'gt_weighted': alpha must be",
        ),
        (["device=tpu"], "device: Input should be 'auto', 'cpu' or 'cuda'"),
        (
            ["simulation.num_gpus_per_client=2"],
            "simulation.num_gpus_per_client: Input should be less than or equal to 1",
        ),
    ],
)
def test_bad_config_is_one_line_error(overrides, message):
    """Schema errors come from load_config, name/part/pairing errors from resolve: both
    are one line naming the field."""
    with pytest.raises(ConfigError) as exc:
        resolve(load_config(None, overrides))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_overrides_and_shorthands():
    cfg = load_config(None, ["strategy=local", "partition.alpha=0.1", "rounds=3", "data_dir=null"])
    assert cfg.strategy.name == "local" and cfg.partition.alpha == 0.1 and cfg.rounds == 3
    cfg = build_config({"strategy": "fkd"}, ["strategy.temperature=2"])
    assert cfg.strategy.name == "fkd" and cfg.strategy.temperature == 2.0
    cfg = build_config(
        {"strategy": {"name": "knfu", "fusion_params": {"beta": 5}}},
        ["strategy.fusion_params.top_k=3"],
    )
    assert cfg.strategy.fusion_params == {"beta": 5, "top_k": 3}


def test_yaml_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_validate():
    from pathlib import Path

    from fedkt.compare import load_compare

    paths = sorted(Path(__file__).parents[1].joinpath("simulations").rglob("*.yaml"))
    assert paths
    for path in paths:
        load_compare(path) if path.name.startswith("compare") else resolve(load_config(path))


def test_default_yaml_equals_builtin_default():
    from pathlib import Path

    assert load_config(Path(__file__).parents[1] / "simulations" / "default.yaml") == load_config()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["run", "--set", "rounds=-1"],
            "fedkt: error: rounds: Input should be greater than or equal to 1",
        ),
        (["run", "nope.yaml"], "fedkt: error: config file nope.yaml does not exist"),
        (["data", "fetch", "imagenet"], "fedkt: error: unknown dataset 'imagenet'"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(argv, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "fedkt.server", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_help_documents_every_field():
    proc = subprocess.run(
        [sys.executable, "-m", "fedkt.server", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for key in (
        "partition.alpha",
        "transfer.size",
        "strategy.fusion_params",
        "distill.ce_weight",
        "--set",
        "--out",
    ):
        assert key in proc.stdout


def test_layout_errors_surface_before_the_simulation_starts(tmp_path):
    from fedkt.server.simulation import simulate

    cfg = load_config(None, ["transfer.size=5000"])
    with pytest.raises(ConfigError, match="transfer.size: 5000 leaves no private data"):
        simulate(cfg, str(tmp_path))
