#!/usr/bin/env bash
# One-time (idempotent) setup: a virtual environment in .venv with fedkt and its test tools.
# torch is installed first and pinned to the CPU build these machines hold locally; a bare
# `torch` requirement would pull a multi-GB CUDA build. On a GPU machine, install your own
# CUDA torch (>= 2.3) first and set FEDKT_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${FEDKT_TORCH:-}" != "skip" ]; then
  # The CPU wheel these machines hold lies in /opt/wheels (normally found through
  # PIP_FIND_LINKS); name it explicitly so a bare environment does not fetch a CUDA build.
  find_links=()
  if [ -d /opt/wheels ]; then find_links=(--find-links /opt/wheels); fi
  .venv/bin/python -m pip install -q "${find_links[@]}" "torch==${FEDKT_TORCH:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[test]"
echo "fedkt installed in .venv ($(.venv/bin/python -c 'import fedkt, torch, flwr; print("fedkt", fedkt.__version__, "torch", torch.__version__, "flwr", flwr.__version__)'))"
