"""simulations/robustness/run.py: each setting's comparison file, and the table read from
hand-made results (honest ALMA, paired to the same strategy without attackers)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

from fedkt.compare import load_compare

STUDY = Path(__file__).resolve().parents[1] / "simulations" / "robustness" / "compare_digits.yaml"


@pytest.fixture(scope="module")
def study():
    return runpy.run_path(str(STUDY.parent / "run.py"))


def test_each_setting_is_a_valid_comparison_and_the_floor_runs_clean_only(study, tmp_path):
    clean = study["comparison_file"](STUDY, tmp_path, None, 0.0)
    attacked = study["comparison_file"](STUDY, tmp_path, "scale", 0.3)
    _, clean_cells = load_compare(clean)
    comp, cells = load_compare(attacked)
    assert "local" in {c.strategy for c in clean_cells}
    assert "local" not in {c.strategy for c in cells}
    assert {(c.config.faults.byzantine, c.config.faults.attack) for c in cells} == {(0.3, "scale")}
    assert comp.tune is not None and not comp.tune.under_faults
    assert yaml.safe_load(attacked.read_text())["name"].endswith("-scale-30pct")


def _results(folder: Path, rows: list[tuple[str, int, float | None, float]]) -> None:
    folder.mkdir(parents=True)
    lines = ["strategy,seed,alma,honest_alma"]
    lines += [f"{s},{seed},{alma},{'' if h is None else h}" for s, seed, h, alma in rows]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_table_pairs_each_attacked_setting_with_the_clean_one(study, tmp_path):
    clean = [("local", 0, None, 0.80), ("local", 1, None, 0.82)]
    clean += [("fedavg", 0, None, 0.90), ("fedavg", 1, None, 0.92)]
    _results(tmp_path / "clean", clean)
    _results(tmp_path / "scale-10pct", [("fedavg", 0, 0.85, 0.70), ("fedavg", 1, 0.89, 0.70)])
    _results(tmp_path / "scale-30pct", [("fedavg", 0, 0.40, 0.30), ("fedavg", 1, 0.50, 0.30)])
    text = study["table"](tmp_path, ["scale"], [0.1, 0.3])
    fedavg = next(line for line in text.splitlines() if line.startswith("| fedavg"))
    # clean 91.0 ± 1.4; 10%: 87.0 ± 2.8, paired differences -5 and -3: mean -4, standard
    # error 1, t(1 df) 12.706 -> [-16.7, +8.7]; 30%: 45.0 ± 7.1, -50 and -42 -> -46 ± 50.8
    assert fedavg.startswith("| fedavg | 91.0 ± 1.4 | 87.0 ± 2.8 (-4.0 [-16.7, +8.7]) | ")
    assert fedavg.endswith("| 45.0 ± 7.1 (-46.0 [-96.8, +4.8]) |")
    local = next(line for line in text.splitlines() if line.startswith("| local"))
    assert "81.0 ± 1.4" in local and "sends nothing" in local
