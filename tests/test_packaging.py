"""The apps are installed under the fedkt namespace, from the editable checkout and from
a wheel alike, and never as top-level `server` / `clients` / `strategies` modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_MODULES = ("fedkt.server.app", "fedkt.clients.app", "fedkt.strategies", "fedkt.methods.knfu")
PROBE = (
    "import importlib, importlib.util, sys;"
    "mods = [importlib.import_module(m) for m in sys.argv[1:]];"
    "print('\\n'.join(m.__file__ for m in mods));"
    "bare = [n for n in ('server', 'clients', 'strategies') if importlib.util.find_spec(n)];"
    "print('bare:', bare)"
)


def _probe(cwd: Path, env_path: str | None = None) -> list[str]:
    import os

    # Only the installation decides what imports (a PYTHONPATH left by Ray in this process
    # by an earlier simulation would add the checkout itself).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *APP_MODULES],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def test_editable_install_maps_the_app_folders_into_the_namespace(tmp_path):
    files = _probe(tmp_path)  # outside the checkout: only the installed mapping can find them
    assert files[0] == str(ROOT / "server" / "app.py")
    assert files[1] == str(ROOT / "clients" / "app.py")
    assert files[2] == str(ROOT / "strategies" / "__init__.py")
    assert files[-1] == "bare: []"


@pytest.mark.slow
def test_wheel_installs_the_apps_under_fedkt(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("fedkt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "fedkt/server/app.py",
        "fedkt/clients/app.py",
        "fedkt/strategies/base.py",
        "fedkt/methods/knfu.py",
        "fedkt/py.typed",
    ):
        assert path in names
    assert not any(n.split("/")[0] in ("server", "clients", "strategies", "tests") for n in names)
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    files = _probe(tmp_path, env_path=str(target))
    assert all(f.startswith(str(target)) for f in files[:-1]), files
    assert files[-1] == "bare: []"
