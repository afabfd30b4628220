import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedkt.models import MODELS, build_model, model_modalities

IMAGE_MODELS = [n for n in MODELS.names() if "image" in model_modalities(n)]


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_models_fit_every_dataset_shape(name, shape):
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(
    ("modality", "shape", "rows"),
    [("tabular", (7,), torch.zeros(2, 7)), ("text", (12, 50), torch.ones(2, 12, dtype=torch.long))],
)
def test_every_model_for_tables_and_text_fits_them(modality, shape, rows):
    names = [n for n in MODELS.names() if modality in model_modalities(n)]
    assert names  # mlp for tables; text-cnn, text-gru for text
    for name in names:
        assert build_model(name, shape, 4, seed=0)(rows).shape == (2, 4)


def test_model_init_is_seeded():
    a, b = (
        build_model("cnn-small", (1, 8, 8), 10, seed=1),
        build_model("cnn-small", (1, 8, 8), 10, seed=1),
    )
    c = build_model("cnn-small", (1, 8, 8), 10, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values())
    )


ROOT = Path(__file__).resolve().parents[1]

# Each layer and the modules it must never import (static or dynamic imports alike).
# core (Flower-free) <- strategies <- server/clients apps (and the console script).
LAYERS = {
    "fedkt": ("flwr", "ray", "fedkt.server", "fedkt.clients", "fedkt.strategies"),
    "strategies": ("fedkt.server", "fedkt.clients"),
    "clients": ("fedkt.server",),
    "server": (),
}
# The apps are installed as fedkt.server / fedkt.clients / fedkt.strategies: a bare
# `server` import would pick up whatever module of that name a user has.
EVERYWHERE = ("server", "clients", "strategies")


def _imports(path: Path) -> list[tuple[int, str | None]]:
    """(line, module) of every import in ``path``: import statements, and calls of
    importlib.import_module / __import__ (module None when the name is not a literal)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            f = node.func
            name = (
                f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            )
            if name in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                found.append((node.lineno, arg.value if isinstance(arg, ast.Constant) else None))
    return found


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        lines = path.read_text().splitlines()
        for lineno, module in _imports(path):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            if module is None:
                if "# layering:" not in lines[lineno - 1]:
                    bad.append(
                        f"{where}: dynamic import of a computed name (say why with '# layering: "
                        "...')"
                    )
                continue
            for prefix in forbidden + EVERYWHERE:
                if module == prefix or module.startswith(prefix + "."):
                    bad.append(f"{where}: {layer} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_point_one_way(layer):
    assert _violations(layer, LAYERS[layer]) == []


def test_layering_check_sees_dynamic_imports(tmp_path, monkeypatch):
    """The check itself: a literal import_module of an app module is caught, as is a
    computed name without a stated reason."""
    pkg = tmp_path / "fedkt"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import importlib\n"
        "sim = importlib.import_module('fedkt.server.simulation')\n"
        "other = importlib.import_module(name)\n"
        "ok = importlib.import_module(name)  # layering: a user's plugin\n"
        "flwr = __import__('flwr')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = _violations("fedkt", LAYERS["fedkt"])
    assert len(bad) == 3
    assert "fedkt/bad.py:2: fedkt imports fedkt.server.simulation" in bad
    assert (
        any(":3: dynamic import" in b for b in bad) and "fedkt/bad.py:5: fedkt imports flwr" in bad
    )


def test_core_does_not_import_flower():
    """fedkt (the core) must stay usable and testable without Flower."""
    code = (
        "import sys, fedkt.cli, fedkt.config, fedkt.learner, fedkt.results, fedkt.transfer, "
        "fedkt.data.fetch,"
        " fedkt.experiment, fedkt.methods, fedkt.compare;"
        "from fedkt.experiment import load_experiment; load_experiment(None, ['strategy=feddf']);"
        "bad = [m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
