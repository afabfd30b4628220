"""The GPU check script: its CPU half runs everywhere (so the script cannot rot); the
CUDA half, a short KnFu simulation on the GPU, runs only where torch sees CUDA."""

import pytest
import torch

from benchmarks.gpu_check import main


def test_gpu_check_cpu_half(capsys):
    assert main(["--devices", "cpu", "--clients", "2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out and "cpu" in out


def test_gpu_check_rejects_unknown_device():
    with pytest.raises(SystemExit) as exc:
        main(["--devices", "tpu"])
    assert exc.value.code == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.slow
def test_gpu_check_on_cuda(capsys):
    assert main(["--clients", "4", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "speed-up cuda/cpu" in out and "KnFu simulation on CUDA" in out
