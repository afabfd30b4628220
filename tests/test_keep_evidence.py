"""What scripts/keep_evidence.py keeps is enough for ``fedkt compare --reuse`` to stand in
for every finished cell and tuning trial, and leaves checkpoints out."""

from __future__ import annotations

import runpy
import tarfile
from pathlib import Path

import pytest
from test_tuning import _fake
from tiny import in_order

from fedkt.compare import finished_runs, load_compare, run_compare

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keep_evidence.py"


def test_kept_evidence_stands_in_for_every_finished_run(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: kept\nset: [rounds=2, num_clients=3]\nstrategies: [local, fkd]\nseeds: [0, 1]\n"
        "tune: {seeds: [100], grid: {fkd: {distill.lr: [0.05, 0.01]}}}\n"
    )
    comp, cells = load_compare(path)
    out = tmp_path / "runs"
    run_compare(comp, cells, out, in_order(_fake([])), log=lambda m: None)
    some_cell = next(out.glob("cells/*/*/*"))
    (some_cell / "checkpoint").mkdir()
    (some_cell / "checkpoint" / "server.safetensors").write_bytes(b"weights")

    keep = runpy.run_path(str(SCRIPT))["keep"]
    kept = tmp_path / "evidence"
    assert keep(out, kept) == 4 + 3  # 4 test cells, 3 tuning trials
    assert (kept / "report.md").is_file() and (kept / "results.csv").is_file()
    unpacked = tmp_path / "unpacked"
    with tarfile.open(kept / "runs.tar.xz") as tar:
        names = tar.getnames()
        for member in tar.getmembers():  # plain files at relative paths only
            assert member.isfile() and not member.name.startswith("/")
            assert ".." not in member.name.split("/")
            tar.extract(member, unpacked)
    assert not [n for n in names if "checkpoint" in n]
    assert finished_runs([unpacked]).keys() == finished_runs([out]).keys()
    assert len(finished_runs([unpacked])) == 7

    # A rerun that reuses the unpacked runs runs nothing, and keeping *its* folder archives
    # none of the copies (they are kept where they were computed).
    calls: list = []
    again = tmp_path / "again"
    run_compare(comp, cells, again, in_order(_fake(calls)), log=lambda m: None,
                reuse=[unpacked])  # fmt: skip
    assert calls == []
    assert keep(again, tmp_path / "evidence2") == 0


def test_keeping_a_folder_that_is_not_a_comparison_is_one_line(tmp_path):
    keep = runpy.run_path(str(SCRIPT))["keep"]
    with pytest.raises(SystemExit, match="is not a comparison folder"):
        keep(tmp_path, tmp_path / "evidence")
