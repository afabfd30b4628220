"""FedDF's server step: distillation selected on labelled server validation data."""

import numpy as np
import torch
from torch import nn

from fedkt.methods.feddf import validation_rows
from fedkt.training import distill_early_stopped
from fedkt.transfer.losses import LOSSES


def test_validation_rows_are_a_seeded_tenth_leaving_rows_to_distil():
    rows = validation_rows(0, 1000, 0.1)
    assert len(rows) == 100 and len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, validation_rows(0, 1000, 0.1))
    assert not np.array_equal(rows, validation_rows(1, 1000, 0.1))
    assert len(validation_rows(0, 10, 0.01)) == 1  # at least one row
    assert len(validation_rows(0, 2, 0.9)) == 1  # and one left to distil on


def _problem():
    """Two well-separated classes on a line: x < 0 is class 0, x > 0 class 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(64, 1, generator=g) + 0.5, -torch.rand(64, 1, generator=g) - 0.5])
    y = (x[:, 0] > 0).long()
    model = nn.Linear(1, 2)
    with torch.no_grad():  # starts right: class 1 for x > 0
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    return model, x, y


def _fit(model, x, teacher, y, keep_start, **kw):
    return distill_early_stopped(
        model,
        x,
        teacher,
        LOSSES.create("kl"),
        (x, y),
        torch.Generator().manual_seed(1),
        max_steps=kw.pop("max_steps", 40),
        batch_size=16,
        lr=0.5,
        eval_every=kw.pop("eval_every", 1),
        patience=kw.pop("patience", 5),
        keep_start_if_better=keep_start,
    )


def test_a_wrong_teacher_is_refused_when_the_start_competes():
    model, x, y = _problem()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = nn.functional.one_hot(1 - y, 2).float()  # every label swapped
    fit = _fit(model, x, wrong, y, keep_start=True)
    assert fit.start_accuracy == 1.0 and fit.kept_step == 0 and fit.kept_accuracy == 1.0
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    # patience 5 from step 0: it stops after 5 steps without a better student
    assert fit.steps == 5


def test_without_the_start_the_best_student_is_kept_and_patience_stops_it():
    model, x, y = _problem()
    wrong = nn.functional.one_hot(1 - y, 2).float()
    fit = _fit(model, x, wrong, y, keep_start=False, patience=3)
    assert fit.kept_step >= 1 and fit.steps == fit.kept_step + 3 < 40
    assert fit.kept_accuracy < fit.start_accuracy  # the reference code's default can lose
    assert fit.kept_accuracy == float((model(x).argmax(1) == y).double().mean())


def test_a_right_teacher_is_followed_for_the_whole_budget():
    model, x, y = _problem()
    with torch.no_grad():  # start from a model that is wrong everywhere
        model.weight.neg_()
    right = nn.functional.one_hot(y, 2).float()
    fit = _fit(model, x, right, y, keep_start=True, max_steps=12, eval_every=4, patience=100)
    assert fit.start_accuracy == 0.0 and fit.kept_accuracy == 1.0
    assert fit.steps == 12 and fit.kept_step in (4, 8, 12)
