#!/usr/bin/env bash
# The checks CI runs, in order: lint (ruff, line length 100), types (mypy on fedkt/), tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q --durations=25 "$@"  # the slowest, to keep the suite short
