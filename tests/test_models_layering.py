import subprocess
import sys

import pytest
import torch

from fedkt.models import MODELS, build_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_models_fit_every_dataset_shape(name, shape):
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_model_init_is_seeded():
    a, b = build_model("cnn-small", (1, 8, 8), 10, seed=1), build_model("cnn-small", (1, 8, 8), 10, seed=1)
    c = build_model("cnn-small", (1, 8, 8), 10, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_core_does_not_import_flower():
    """fedkt (the core) must stay usable and testable without Flower."""
    code = (
        "import sys, fedkt.cli, fedkt.config, fedkt.learner, fedkt.results, fedkt.transfer, fedkt.data.fetch;"
        "bad = [m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
