"""The comparison report's statistics and flags, on hand-made results."""

from __future__ import annotations

import pytest

from fedkt.report import CellResult, Paired, markdown, paired, summarise


def test_paired_difference_by_hand():
    a = {0: 0.80, 1: 0.82, 2: 0.81}
    b = {0: 0.70, 1: 0.71, 2: 0.72, 3: 0.9}  # seed 3 has no partner: left out
    d = paired(a, b)
    # differences 0.10, 0.11, 0.09: mean 0.10, sd 0.01, t(0.975, 2) = 4.302653 -> half 0.024841
    assert d.n == 3 and d.mean == pytest.approx(0.10)
    assert d.lo == pytest.approx(0.10 - 0.024841, abs=1e-6) and d.hi == pytest.approx(
        0.10 + 0.024841, abs=1e-6
    )
    assert d.verdict(0.01) == "better"
    assert paired(b, a).verdict(0.01) == "worse"


def test_verdicts_use_the_margin_and_admit_ignorance():
    base = {0: 0.5, 1: 0.5, 2: 0.5}
    close = paired({0: 0.498, 1: 0.501, 2: 0.499}, base)  # within +-0.5 points
    assert close.verdict(0.01) == "non-inferior (margin 1 pt)"
    wide = paired({0: 0.45, 1: 0.55, 2: 0.50}, base)
    assert wide.verdict(0.01) == "the seeds cannot tell"
    assert paired({0: 0.9}, {0: 0.5}).verdict(0.01) == "the seeds cannot tell"  # one seed
    assert Paired(float("nan"), float("nan"), float("nan"), 0).verdict(0.01) == "no shared seeds"


def _cell(
    strategy: str,
    seed: int,
    alma: float,
    local: float,
    clients: list[float],
    global_acc: float | None = None,
) -> CellResult:
    summary = {"alma": alma, "local_alma": local, "worst_client_accuracy": min(clients),
               "global_accuracy": alma if global_acc is None else global_acc,
               "steps_per_round": 40, "bytes_up": 1e6, "bytes_down": 1e6,
               "wall_seconds": 1.0, "alma_per_round": [local, alma]}  # fmt: skip
    return CellResult(strategy, "alpha=0.1", seed, summary, 10, clients,
                      summary["alma_per_round"], dict(enumerate(clients)))  # fmt: skip


def test_collapsed_strategy_is_flagged_in_words():
    cells = []
    for seed in range(3):
        cells.append(_cell("local", seed, 0.78 + 0.01 * seed, 0.78 + 0.01 * seed, [0.7, 0.8, 0.85]))
        cells.append(_cell("fkd", seed, 0.05, 0.78, [0.0, 0.1, 0.05]))  # below chance, dead clients
        cells.append(
            _cell("knfu", seed, 0.70, 0.78, [0.6, 0.7, 0.8])
        )  # 8 points below its local_alma
    table = summarise(cells, margin=0.01, flag_margin=0.05, reference="local")
    rows = table["alpha=0.1"]
    assert rows["local"].flags == []
    fkd = rows["fkd"].flags
    assert any(f.startswith("ends below chance (5.0% < 10.0%)") for f in fkd)
    assert any("73.0 points below its own accuracy after local training" in f for f in fkd)
    assert any(f.startswith("9 dead client result(s)") for f in fkd)
    assert rows["knfu"].flags == [
        "ends 8.0 points below its own accuracy after local training "
        "(70.0% vs 78.0%; paired over 3 seeds: -8.0 [-8.0, -8.0])"
    ]
    assert rows["fkd"].vs_ref is not None and rows["fkd"].vs_ref.verdict(0.01) == "worse"
    text = markdown("demo", table, [0, 1, 2], 9, 9, 0.01, 0.05, budget=20, reference="local")
    assert text.index("## What won") < text.index("## Flags") < text.index("## alpha=0.1")
    assert "**local** has the highest ALMA" in text
    assert "alpha=0.1 / fkd: ends below chance" in text
    assert "exactly 20 optimiser steps" in text


def test_a_client_left_far_behind_the_same_client_alone_is_flagged():
    """A collapsed network predicting one class scores that class's share (here 29%, far
    above chance): only the paired per-client comparison with local training sees it."""
    cells = []
    for seed in range(3):
        cells.append(_cell("local", seed, 0.85, 0.85, [0.82, 0.90, 0.83]))
        cells.append(_cell("fkd", seed, 0.70, 0.70, [0.29 if seed == 1 else 0.81, 0.92, 0.84]))
        cells.append(_cell("fd", seed, 0.84, 0.84, [0.80, 0.88, 0.70]))  # 13 points: noise
    rows = summarise(cells, margin=0.01, flag_margin=0.5, reference="local")["alpha=0.1"]
    assert rows["fkd"].left_behind == (1, 9)
    assert rows["fkd"].flags == [
        "1 of 9 client results end more than 20 points below the same client under local "
        "(same seed and data)"
    ]
    assert rows["fd"].flags == [] and rows["local"].flags == []


def test_a_consistent_drop_below_local_alma_is_flagged_under_the_margin():
    """FKD on digits at alpha 0.1 ended 2.6-7.3 points below its own accuracy after local
    training in all 5 seeds (mean 4.3): under a 5-point margin on the mean, but its paired
    interval lies wholly below zero. A drop of the same mean that the seeds do not agree
    on, or a consistent one under a point, is not flagged."""
    drops = {
        "fkd": [0.073, 0.032, 0.026, 0.058, 0.026],  # consistent: flagged
        "dsfl": [0.12, -0.06, 0.09, -0.05, 0.115],  # mean 4.3, interval crosses 0
        "fd": [0.004, 0.006, 0.005, 0.004, 0.006],  # consistent, half a point
    }
    cells = []
    for s, ds in drops.items():
        for seed, d in enumerate(ds):
            cells.append(_cell(s, seed, 0.80 - d, 0.80, [0.8, 0.8, 0.8]))
    rows = summarise(cells, margin=0.01, flag_margin=0.05, reference="fd")["alpha=0.1"]
    # differences -7.3 -3.2 -2.6 -5.8 -2.6: mean -4.3, squared deviations sum 18.24,
    # sd sqrt(18.24 / 4) = 2.13542, t(0.975, 4) = 2.776445 -> half 2.6515: [-6.95, -1.65]
    assert rows["fkd"].step.hi == pytest.approx(-0.043 + 0.026515, abs=1e-5)
    assert rows["fkd"].flags == [
        "ends 4.3 points below its own accuracy after local training "
        "(75.7% vs 80.0%; paired over 5 seeds: -4.3 [-7.0, -1.6])"
    ]
    assert rows["dsfl"].step.hi > 0 and rows["dsfl"].flags == []
    assert rows["fd"].step.hi < 0 and rows["fd"].flags == []
    one_seed = summarise([c for c in cells if c.seed == 0], 0.01, 0.05, "fd")["alpha=0.1"]
    assert one_seed["fkd"].flags == [
        "ends 7.3 points below its own accuracy after local training (72.7% vs 80.0%)"
    ]


def test_a_drop_that_taught_other_classes_says_so():
    """Under label skew a shared model or a consensus teaches a client classes it does not
    hold and costs it some accuracy on its own: the flag stays (the drop is real) but says
    that the same step raised global-test accuracy over the reference, paired by seed."""
    cells = []
    for seed, (g_ref, g_fkd) in enumerate([(0.35, 0.40), (0.36, 0.42), (0.34, 0.41)]):
        cells.append(_cell("local", seed, 0.80, 0.80, [0.8, 0.8, 0.8], global_acc=g_ref))
        cells.append(_cell("fkd", seed, 0.74, 0.80, [0.7, 0.75, 0.77], global_acc=g_fkd))
        cells.append(_cell("fd", seed, 0.74, 0.80, [0.7, 0.75, 0.77], global_acc=g_ref))
    rows = summarise(cells, margin=0.01, flag_margin=0.05, reference="local")["alpha=0.1"]
    # global differences 0.05, 0.06, 0.07: mean 0.06, sd 0.01, t(0.975, 2) 4.302653 -> 0.0249
    assert rows["fkd"].flags == [
        "ends 6.0 points below its own accuracy after local training (74.0% vs 80.0%; paired "
        "over 3 seeds: -6.0 [-6.0, -6.0]); its global-test accuracy is +6.0 [+3.5, +8.5] "
        "points over local's: the step taught the clients classes they do not hold, at a cost "
        "on their own (what a shared model or a consensus does under label skew; a step size "
        "not tuned on validation data makes the cost larger)"
    ]
    # the same drop without a global gain is not explained away
    assert rows["fd"].flags == [
        "ends 6.0 points below its own accuracy after local training (74.0% vs 80.0%; paired "
        "over 3 seeds: -6.0 [-6.0, -6.0])"
    ]
    text = markdown("demo", {"alpha=0.1": rows}, [0, 1, 2], 9, 9, 0.01, 0.05, 20, "local")
    assert "| local_alma | global |" in text
    assert "| fkd | 74.0 ± 0.0 | ± 0.0 | 80.0 | 41.0 ± 1.0 |" in text
