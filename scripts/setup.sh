#!/usr/bin/env bash
# One-time (idempotent) setup: a virtual environment in .venv with fedkt and its test tools.
# torch is installed first and pinned to the CPU build these machines hold locally; a bare
# `torch` requirement would pull a multi-GB CUDA build. On a GPU machine, install your own
# CUDA torch (>= 2.3) first and set FEDKT_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # A new environment takes about 2.2 GiB (torch alone 1.3), and pip unpacks in TMPDIR: say
  # so up front rather than fail half-installed with pip's "No space left on device".
  for place in . "${TMPDIR:-/tmp}"; do
    free_kib=$(df -Pk "$place" | awk 'NR == 2 {print $4}')
    if [ "${free_kib:-0}" -lt $((3 * 1024 * 1024)) ]; then
      hint="free some space there"
      if [ "$place" != . ]; then hint="$hint, or point TMPDIR at a roomier folder"; fi
      echo "setup.sh: $(cd "$place" && pwd) has $((free_kib / 1024)) MiB free; installing needs about 3 GiB ($hint)" >&2
      exit 1
    fi
  done
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
