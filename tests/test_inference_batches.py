"""Inference passes (scoring, knowledge) run at a few batch shapes only: the last batch of a
pass is made up to a power of two, so a worker serving clients whose data sets all differ
in size does not compile and cache a kernel set per size (oneDNN's primitive cache)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkt.training import padded_batch, predict


@pytest.mark.parametrize("batch_size", [256, 100, 1])
def test_the_last_batch_is_made_up_to_a_power_of_two_with_its_own_rows(batch_size):
    x = torch.arange(300 * 2, dtype=torch.float32).reshape(300, 2)
    for n in range(1, batch_size + 1):
        batch = x[:n]
        padded = padded_batch(batch, batch_size)
        size = len(padded)
        assert n <= size <= batch_size
        assert size == batch_size or size & (size - 1) == 0  # a power of two
        assert size < 2 * n or n == size  # never more than doubles the pass
        assert torch.equal(padded[:n], batch)
        assert torch.equal(padded[n:], batch[: size - n])  # real samples, not made-up ones
    assert len(padded_batch(x[:0], batch_size)) == 0


def test_predict_sees_a_bounded_set_of_shapes_and_returns_one_row_per_sample():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    model(torch.randn(32, 3))  # running statistics that are not the identity
    model.eval()
    shapes: set[int] = set()

    def logits(xb: torch.Tensor) -> torch.Tensor:
        shapes.add(len(xb))
        return model(xb)

    for n in range(1, 200):
        x = torch.randn(n, 3)
        out = predict(model, x, logits, batch_size=64)
        assert out.shape == (n, 2)
        assert torch.allclose(out, model(x).detach(), atol=1e-6)
    assert shapes == {1, 2, 4, 8, 16, 32, 64}  # 199 lengths, 7 shapes
    assert not model.training  # predict restores the mode it found
    model.train()
    predict(model, torch.randn(5, 3))
    assert model.training
    assert predict(model, torch.randn(0, 3)).numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_predict_fills_one_float32_result_with_the_same_values_as_joining_the_batches(dtype):
    """predict writes each batch into one preallocated tensor (a list of per-batch outputs
    fragmented the heap); the values are those of joining the batches' outputs, cast to
    float32, whatever the output's dtype and rank. The batches are those predict runs, the
    last one padded: on some CPUs an 11-row product rounds differently from the same rows
    inside a 16-row one (seen on a Xeon whose kernels differed from the last machine's)."""
    torch.manual_seed(1)
    weight = torch.randn(3, 5, 2)

    def tokens(xb: torch.Tensor) -> torch.Tensor:  # (n, 5, 2) outputs in another dtype
        return torch.einsum("ni,ijk->njk", xb, weight).to(dtype)

    model = nn.Linear(3, 3)  # only supplies the device and the train/eval mode
    x = torch.randn(203, 3)
    out = predict(model, x, tokens, batch_size=16)
    batches = [x[i : i + 16] for i in range(0, 203, 16)]
    expected = torch.cat([tokens(padded_batch(b, 16))[: len(b)] for b in batches]).float()
    assert out.dtype == torch.float32 and out.shape == (203, 5, 2)
    assert torch.equal(out, expected)
