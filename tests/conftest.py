import atexit
import os
import shutil
import tempfile

import pytest


def _own_temp_dir(variable: str, prefix: str) -> None:
    """Point ``variable`` at a fresh directory for this test run, unless the caller set it,
    and remove the directory when the run ends: a run that left one behind each time filled
    /tmp on a machine that runs the suite many times."""
    if variable in os.environ:
        return
    path = tempfile.mkdtemp(prefix=prefix)
    os.environ[variable] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


# Offline, quiet Flower with its own home for every test run.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
_own_temp_dir("FLWR_HOME", "fedkt-flwr-home-")
# Data layouts cached for this test run only (subprocesses and Ray workers inherit it).
_own_temp_dir("FEDKT_LAYOUT_CACHE", "fedkt-layouts-")


@pytest.fixture
def tiny_cfg():
    """A few clients on digits: seconds per run through the real simulation engine."""
    from tiny import TINY

    from fedkt.config import load_config

    def make(*overrides: str):
        return load_config(None, TINY + list(overrides))

    return make


@pytest.fixture(scope="module")
def one_engine():
    """One shared simulation engine for a whole module (one Ray start and one pool of warm
    workers instead of one per ``simulate``): results are bit-identical either way
    (tests/test_shared_engine.py), and each Ray start costs seconds on a 2-core machine.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_engine")``."""
    from fedkt.server.shared_engine import shared_engine

    with shared_engine():
        yield


@pytest.fixture
def task_identity():
    """Flower creates messages only inside a task (the simulation sets its identity)."""
    from flwr.supercore.task_identity import TaskIdentity

    before = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = before
