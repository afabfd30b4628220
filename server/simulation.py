"""Run an experiment in Flower's simulation engine, in this process.

The ServerApp runs :func:`server.loop.run_experiment`; the ClientApp is the very one
that real SuperNodes run (``clients.app:app``), with one virtual SuperNode per client.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from fedkt.config import ExperimentConfig
from fedkt.errors import FedktError
from fedkt.progress import Progress
from server.environment import prepare_environment


def simulate(cfg: ExperimentConfig, out_dir: str, progress: Progress | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run ``cfg`` with ``cfg.num_clients`` virtual SuperNodes; return the summary."""
    prepare_environment()
    from fedkt.data.federation import federation_for

    # Build the data layout here first: a layout the config cannot produce (transfer set too
    # large, a client left without data, ...) is then a one-line error before any worker starts.
    federation_for(cfg)
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from clients.app import app as client_app
    from server.loop import run_experiment

    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["summary"] = run_experiment(grid, cfg, out_dir, progress)
        except BaseException as exc:  # surfaced after the engine has shut down
            outcome["error"] = exc

    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.ERROR)
    backend_config = {
        "client_resources": {
            "num_cpus": cfg.simulation.num_cpus_per_client,
            "num_gpus": cfg.simulation.num_gpus_per_client,
        },
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "include_dashboard": False,
            "logging_level": "error",
            "log_to_driver": verbose,
        },
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=server_app, client_app=client_app, num_supernodes=cfg.num_clients,
                backend_config=backend_config, verbose_logging=verbose,
            )
    finally:
        flwr_logger.setLevel(old_level)
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise FedktError("the simulation ended without results (see the log above)")
    return outcome["summary"]
