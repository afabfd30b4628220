"""The ServerApp for ``flwr run .`` and deployed SuperLinks.

Run config keys (``[tool.flwr.app.config]`` or ``--run-config``):
``config``    a YAML experiment path (relative to the app directory) or "default";
``overrides`` comma-separated ``key=value`` pairs, as ``fedkt run --set``;
``out``       the results directory (default ``runs/<date>-<name>``);
``resume``    true: continue the run in ``out`` from its last checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkt.clients.object_pulls import install as fast_object_pulls
from fedkt.config import load_config
from fedkt.errors import FedktError
from fedkt.experiment import resolve
from fedkt.results import default_out_dir
from fedkt.server.loop import run_experiment

app = ServerApp()


class _UserErrorsInOneLine(logging.Filter):
    """Flower logs any exception a ServerApp raises with its traceback. A
    :class:`FedktError` is the user's to fix (a bad ``--run-config`` override, a missing
    config file) and its message says all: logged as the one line the CLI prints. The
    run still ends FAILED, with that message in its status (``flwr ls``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, FedktError):
            record.msg, record.args = "fedkt: error: %s", (exc,)
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("flwr").addFilter(_UserErrorsInOneLine())

APP_DIR = Path(__file__).resolve().parents[1]


def _resolve(path: str) -> str:
    """A config path as given, else relative to the app directory (where a FAB unpacks)."""
    return path if Path(path).exists() or Path(path).is_absolute() else str(APP_DIR / path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    fast_object_pulls()  # replies' objects: see clients/object_pulls.py
    rc = context.run_config
    path = str(rc.get("config", "default"))
    overrides = [o.strip() for o in str(rc.get("overrides", "")).split(",") if o.strip()]
    cfg = load_config(None if path in ("", "default") else _resolve(path), overrides)
    out = str(rc.get("out", "")) or str(default_out_dir(cfg))
    Path(out).mkdir(parents=True, exist_ok=True)
    run_experiment(grid, resolve(cfg), out, resume=bool(rc.get("resume", False)))
