"""The ``fedkt`` console script: the core's command line, given the simulation engine.

The core (:mod:`fedkt.cli`) parses, validates and reports; running an experiment needs
Flower's simulation engine, which lives in this layer. So the console script is here
and hands the core a loader for :func:`fedkt.server.simulation.simulate` (loaded only
when a command runs a simulation, so ``fedkt --help`` stays fast).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fedkt import cli


def _simulator() -> cli.Simulate:
    from fedkt.server.simulation import SimulationEngine

    return SimulationEngine()


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, simulator=_simulator)


if __name__ == "__main__":
    sys.exit(main())
