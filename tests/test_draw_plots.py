"""A simulation draws its figures from the run's files once its engine has stopped."""

from __future__ import annotations

import numpy as np
import pytest

from fedkt.errors import ResultsError
from fedkt.experiment import resolve
from fedkt.results import ResultsWriter, draw_plots
from fedkt.rounds import RoundRecord


def _run(tmp_path, tiny_cfg, rounds=3):
    writer = ResultsWriter(tmp_path, resolve(tiny_cfg()), plots=False)
    rows = [{"client": i, "accuracy": 0.5 + 0.1 * i, "global_accuracy": 0.5} for i in range(2)]
    for r in range(1, rounds + 1):
        fusion = ([0, 1], np.array([[0.5, 0.5], [0.2 * r, 1 - 0.2 * r]]))
        writer.add_round(RoundRecord(round=r, alma=0.1 * r), rows, fusion)
    writer.finish(1.0)
    assert not (tmp_path / "accuracy.png").exists()


def test_the_figures_come_from_the_files_of_a_finished_run(tmp_path, tiny_cfg):
    _run(tmp_path, tiny_cfg)
    draw_plots(tmp_path, "tiny")
    for name in ("accuracy.png", "accuracy.pdf", "fusion_weights.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_broken_fusion_line_is_one_clear_error(tmp_path, tiny_cfg):
    _run(tmp_path, tiny_cfg)
    with open(tmp_path / "fusion_weights.jsonl", "a") as fh:
        fh.write('{"round": 4, "clients": [0, 1]}\n')  # no weights
    with pytest.raises(ResultsError, match=r"fusion_weights.jsonl: not fedkt's fusion weights"):
        draw_plots(tmp_path, "tiny")
