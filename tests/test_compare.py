"""`fedkt compare`: matrix expansion, fairness, resumability and the report."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import in_order

from fedkt.compare import (
    DEFAULT_COMPARISON,
    confidence_interval,
    load_compare,
    run_compare,
)
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.provenance import kernel_identity
from fedkt.results import ResultsWriter
from fedkt.rounds import RoundRecord

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "cmp.yaml"
    path.write_text(text)
    return path


SMALL = """
name: t
base: default
set: [rounds=2, num_clients=3]
strategies: [local, {name: knfu, fusion_params: {beta: 5}, label: knfu-b5}]
partitions: [{name: dirichlet, alpha: 0.1}, {name: iid}]
seeds: [0, 1]
"""


def test_matrix_expansion_and_fairness(tmp_path):
    comp, cells = load_compare(_write(tmp_path, SMALL))
    assert len(cells) == 2 * 2 * 2
    assert {c.strategy for c in cells} == {"local", "knfu-b5"}
    assert {c.partition for c in cells} == {"dirichlet-alpha=0.1", "iid"}
    knfu = [c for c in cells if c.strategy == "knfu-b5"][0].config
    assert knfu.strategy.fusion_params == {"beta": 5} and knfu.rounds == 2 and knfu.num_clients == 3
    # under one seed and partition, cells differ only in the strategy (and the run name)
    a, b = [c.config for c in cells if c.partition == "iid" and c.seed == 1]
    da, db = json.loads(a.to_json()), json.loads(b.to_json())
    assert {k for k in da if da[k] != db[k]} == {"name", "strategy"}


def test_default_comparison_matches_its_yaml():
    comp, builtin = load_compare(None)
    shipped_comp, shipped = load_compare(ROOT / "simulations" / "compare_default.yaml")
    assert [c.config for c in builtin] == [c.config for c in shipped]
    assert comp.tune == shipped_comp.tune
    # every strategy of the main job is tuned on validation data (the audit's rule), each
    # on the step size of the phase it adds
    assert comp.tune is not None and set(comp.tune.grid) == set(DEFAULT_COMPARISON["strategies"])
    assert all(
        {"train.lr", "distill.lr"} & set(grid) and all(len(v) >= 2 for v in grid.values())
        for grid in comp.tune.grid.values()
    )
    # the main job reads as evidence only with >= 5 seeds, every strategy on the same budget
    assert len(DEFAULT_COMPARISON["seeds"]) >= 5
    seeds = DEFAULT_COMPARISON["seeds"]
    assert len(builtin) == len(DEFAULT_COMPARISON["strategies"]) * 2 * len(seeds)
    assert {c.config.distill.steps for c in builtin} == {10}  # 2 epochs x ceil(300 / 64)


def test_mnist_comparison_config_is_valid():
    _, cells = load_compare(ROOT / "simulations" / "compare_mnist.yaml")
    assert len(cells) == 12 * 1 * 5 and cells[0].config.dataset == "mnist"
    assert {c.config.partition.samples_per_client for c in cells} == {500}


def test_bad_comparison_files(tmp_path):
    with pytest.raises(ConfigError, match="strategies: .*at least 1"):
        load_compare(_write(tmp_path, "strategies: []\n"))
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        load_compare(_write(tmp_path, "strategies: [nope]\n"))
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        load_compare(_write(tmp_path, "strategies: [local]\nseeds: [1, 1]\n"))
    with pytest.raises(ConfigError, match="both labelled"):
        load_compare(_write(tmp_path, "strategies: [local, local]\n"))


def test_confidence_interval():
    mean, std, half = confidence_interval([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)
    assert half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027
    assert math.isnan(confidence_interval([0.5])[2])


def _fake_run(calls):
    """Stands in for a simulation: writes a real results directory with made-up numbers."""

    def run(cfg, cdir):
        calls.append(cfg.name)
        writer = ResultsWriter(cdir, resolve(cfg))
        rng = np.random.default_rng(len(cfg.name) + cfg.seed)
        for r in range(1, cfg.rounds + 1):
            rows = [
                {"client": i, "accuracy": float(rng.uniform(0.5, 1)), "global_accuracy": 0.5}
                for i in range(cfg.num_clients)
            ]
            writer.add_round(RoundRecord(round=r, bytes_up=1000 * r, bytes_down=500), rows, None)
        return writer.finish(1.0)

    return run


def test_resume_skips_finished_and_redoes_interrupted_cells(tmp_path):
    comp, cells = load_compare(_write(tmp_path, SMALL))
    out = tmp_path / "out"
    calls: list[str] = []
    run = _fake_run(calls)

    def interrupted(cfg, cdir):
        if len(calls) == 3:
            (cdir).mkdir(parents=True)
            (cdir / "metrics.jsonl").write_text("partial")
            raise KeyboardInterrupt
        return run(cfg, cdir)

    with pytest.raises(KeyboardInterrupt):
        run_compare(comp, cells, out, in_order(interrupted), log=lambda m: None)
    assert len(calls) == 3
    calls.clear()
    result = run_compare(comp, cells, out, in_order(run), log=lambda m: None)
    assert len(calls) == len(cells) - 3  # finished cells are not recomputed; the broken one is
    assert result["finished"] == len(cells)
    calls.clear()
    run_compare(comp, cells, out, in_order(run), log=lambda m: None)
    assert calls == []
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(cells) and {r["strategy"] for r in rows} == {"local", "knfu-b5"}
    report = (out / "report.md").read_text()
    assert "## iid" in report and "| knfu-b5 |" in report and "CI95" in report
    for name in ("final_alma.png", "alma_per_round.png", "alma_vs_bytes.png", "client_spread.png"):
        assert (out / name).stat().st_size > 0
    other = load_compare(_write(tmp_path, SMALL.replace("seeds: [0, 1]", "seeds: [0, 2]")))
    with pytest.raises(ConfigError, match="different comparison"):
        run_compare(*other, out, in_order(run), log=lambda m: None)


def test_finished_runs_of_another_comparison_stand_in_for_identical_cells(tmp_path, monkeypatch):
    import fedkt.compare as compare

    comp_a, cells_a = load_compare(_write(tmp_path, SMALL))
    run_compare(comp_a, cells_a, tmp_path / "a", in_order(_fake_run([])), log=lambda m: None)
    # another comparison (another name: a label only) sharing seed 1 and one strategy
    text = SMALL.replace("name: t", "name: u").replace("seeds: [0, 1]", "seeds: [1, 2]")
    comp_b, cells_b = load_compare(_write(tmp_path, text))
    calls: list[str] = []
    logged: list[str] = []
    result = run_compare(
        comp_b,
        cells_b,
        tmp_path / "b",
        in_order(_fake_run(calls)),
        logged.append,
        reuse=[tmp_path / "a"],
    )
    assert result["finished"] == len(cells_b) == 8
    assert len(calls) == 4  # seed 2 runs; seed 1 is copied
    assert "4 cells run, 4 reused, 0 already finished" in logged
    for cell in cells_b:
        cdir = compare._cell_dir(tmp_path / "b", cell)
        source = compare._cell_dir(tmp_path / "a", cell)
        if cell.seed == 1:
            assert (cdir / compare.REUSED_FILE).read_text().strip() == str(source.resolve())
            assert (cdir / "summary.json").read_text() == (source / "summary.json").read_text()
        else:
            assert not (cdir / compare.REUSED_FILE).exists()
    # a field that changes the numbers, or other code, never matches
    more = _write(tmp_path, text.replace("rounds=2", "rounds=3"))
    calls.clear()
    run_compare(
        *load_compare(more),
        tmp_path / "c",
        in_order(_fake_run(calls)),
        lambda m: None,
        [tmp_path / "a"],
    )
    assert len(calls) == 8
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Every cell was computed by the same code" in report
    assert f"on the same kernels (`{kernel_identity()}`).\n" in report
    mixed = compare.provenance_markdown(
        [{"code": "a" * 64}, {"code": "b" * 64}, {"code": "a" * 64}]
    )
    assert "**Warning:** the cells were computed by 2 different versions" in mixed
    assert "`aaaaaaaaaaaa` (2 cells)" in mixed
    # runs of the same code from a machine whose kernels differ are run again, and said so
    from fedkt import provenance

    kernels = provenance.kernel_identity
    monkeypatch.setattr(provenance, "kernel_identity", lambda device="cpu": "other " + device)
    said: list[str] = []
    assert compare.finished_runs([tmp_path / "a"], said.append) == {}
    assert said == [
        f"--reuse: 8 finished run(s) of this code were computed on other kernels "
        f"({kernels()}; here: other cpu) and are run again: another kind of machine may "
        "round differently"
    ]
    monkeypatch.setattr(provenance, "kernel_identity", kernels)
    assert len(compare.finished_runs([tmp_path / "a"])) == 8
    monkeypatch.setattr(provenance, "code_digest", lambda plugins=(): "edited")
    assert compare.finished_runs([tmp_path / "a"]) == {}
    with pytest.raises(ConfigError, match="--reuse: .* is not a directory"):
        compare.finished_runs([tmp_path / "nope"])


def test_the_report_warns_when_cells_ran_on_different_kernels():
    """A comparison resumed or extended on another kind of machine: the same code, but
    arithmetic that may round differently, so the reader is told which cells ran where."""
    from fedkt.compare import provenance_markdown

    one = provenance_markdown([{"code": "a" * 64, "kernels": "x86 avx2"}] * 2)
    assert "same code (digest `aaaaaaaaaaaa`) on the same kernels (`x86 avx2`).\n" in one
    assert "Warning" not in one
    two = provenance_markdown(
        [
            {"code": "a" * 64, "kernels": "x86 avx2"},
            {"code": "a" * 64, "kernels": "x86 avx512f"},
            {"code": "a" * 64, "kernels": "x86 avx2"},
        ]
    )
    assert "**Warning:** the cells ran on 2 kinds of kernels" in two
    assert "`x86 avx2` (2 cells), `x86 avx512f` (1 cells)" in two
    assert "different versions" not in two
    old = provenance_markdown([{"code": "a" * 64}])  # a run from before kernels were kept
    assert "on the same kernels (`not recorded`)" in old
    both = provenance_markdown([{"code": "a" * 64}, {"code": "b" * 64}])
    assert "before reading the numbers.\n\nEvery cell ran on the same kernels" in both


def test_report_statistics_match_cells(tmp_path):
    comp, cells = load_compare(_write(tmp_path, SMALL))
    out = tmp_path / "out"
    result = run_compare(comp, cells, out, in_order(_fake_run([])), log=lambda m: None)
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    almas = [float(r["alma"]) for r in rows if r["strategy"] == "local" and r["partition"] == "iid"]
    mean, std, half = result["table"]["iid"]["local"].alma
    assert mean == pytest.approx(np.mean(almas)) and std == pytest.approx(np.std(almas, ddof=1))


@pytest.mark.slow
def test_cli_compare_end_to_end_and_resume(tmp_path):
    cfg = _write(
        tmp_path,
        """
name: e2e
set: [rounds=2, num_clients=3, train.epochs=2, distill.epochs=1, transfer.size=150]
strategies: [fedavg, fkd]
partitions: [{name: dirichlet, alpha: 0.5}]
seeds: [0]
""",
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fedkt.server", "compare", str(cfg), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    by = {(r["strategy"], r["seed"]): r for r in rows}
    assert all(0.1 < float(r["alma"]) <= 1.0 for r in rows)
    # FedAvg ships whole models, FKD soft labels: traffic differs accordingly
    assert float(by[("fedavg", "0")]["bytes_up"]) != float(by[("fkd", "0")]["bytes_up"])
    assert (out / "report.md").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 cells run, 2 already finished" in again.stderr
    # another comparison over the same cells copies the real runs instead of rerunning them
    cmd[cmd.index(str(cfg)) + 2] = str(tmp_path / "copy")
    copied = subprocess.run(
        [*cmd, "--reuse", str(out)], capture_output=True, text=True, timeout=600
    )
    assert copied.returncode == 0, copied.stderr[-2000:]
    assert "0 cells run, 2 reused, 0 already finished" in copied.stderr
    with open(tmp_path / "copy" / "results.csv") as fh:
        assert [r["alma"] for r in csv.DictReader(fh)] == [r["alma"] for r in rows]


def test_overrides_that_the_matrix_decides_are_refused(tmp_path):
    path = _write(tmp_path, SMALL)
    for bad in ("seed=3", "strategy.fusion_params.beta=2", "strategy=fkd"):
        with pytest.raises(ConfigError, match="decided per cell"):
            load_compare(path, [bad])
    _, cells = load_compare(path, ["strategy.temperature=2"])
    assert all(c.config.strategy.temperature == 2.0 for c in cells)


def test_resume_with_different_overrides_is_refused(tmp_path):
    path = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    run_compare(*load_compare(path), out, in_order(_fake_run([])), log=lambda m: None)
    with pytest.raises(ConfigError, match="different comparison"):
        run_compare(
            *load_compare(path, ["rounds=3"]), out, in_order(_fake_run([])), log=lambda m: None
        )


def test_cells_with_a_round_checkpoint_are_kept_for_resuming(tmp_path):
    from fedkt.checkpoint import save_server
    from fedkt.compare import cell_resumable

    comp, cells = load_compare(_write(tmp_path, SMALL))
    out = tmp_path / "out"
    calls: list[str] = []
    run = _fake_run(calls)
    seen: list[bool] = []

    def interrupted(cfg, cdir):
        if len(calls) == 1:
            cdir.mkdir(parents=True)
            save_server(cdir, 1, {"arrays": {}, "strategy": {}})
            raise KeyboardInterrupt
        return run(cfg, cdir)

    with pytest.raises(KeyboardInterrupt):
        run_compare(comp, cells, out, in_order(interrupted), log=lambda m: None)

    def resuming(cfg, cdir):
        seen.append(cell_resumable(cdir))
        return run(cfg, cdir)

    run_compare(comp, cells, out, in_order(resuming), log=lambda m: None)
    assert seen[0] is True and not any(seen[1:])


def test_the_engine_is_held_while_cells_run_and_closed_before_the_report(tmp_path, monkeypatch):
    """A shared engine's workers (0.6 GiB with two) are gone before the report is drawn."""
    import contextlib

    import fedkt.compare as compare

    events: list[str] = []

    @contextlib.contextmanager
    def engine():
        events.append("engine up")
        yield
        events.append("engine down")

    report = compare.write_report
    monkeypatch.setattr(compare, "write_report", lambda *a: events.append("report") or report(*a))
    comp, cells = load_compare(_write(tmp_path, SMALL))
    cell_runs: list[str] = []
    run = _fake_run(cell_runs)
    result = run_compare(
        comp,
        cells,
        tmp_path / "out",
        in_order(lambda *a: (events.append("cell"), run(*a))[1]),
        log=lambda m: None,
        engine=engine,
    )
    assert result["finished"] == len(cells)
    assert events == ["engine up", *["cell"] * len(cells), "engine down", "report"]
