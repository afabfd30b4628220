"""Copy a finished (or partly finished) comparison into ``evidence/``, the tracked record
of the runs behind the numbers in docs/.

    python scripts/keep_evidence.py runs/mnist-alpha0.5 evidence/mnist-alpha0.5

Why: a comparison on 2 CPU cores takes hours to days and a working checkout is not
kept between sessions, so runs/ (ignored by git) is lost. What is kept is what makes a
number traceable and what ``fedkt compare --reuse`` needs to stand in for a cell:

- at the top, readable as they are: the comparison's plan (``compare.json``), report,
  ``results.csv``, ``tuning.json`` and figures;
- ``runs.tar.xz``: per cell and per tuning trial its ``config.yaml`` and ``summary.json``
  (whose code digest and kernels must match for reuse) and its per-round, per-client records
  (``*.jsonl``), at their paths in the comparison folder. Unpack it to reuse the runs:
  ``mkdir -p runs/x && tar -xJf evidence/<name>/runs.tar.xz -C runs/x`` then
  ``fedkt compare ... --reuse runs/x``.

Checkpoints and per-cell figures are left out (large, recomputable), and so are runs the
comparison itself copied from another folder (``reused_from.txt``): they are kept where
they were computed.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

#: Per cell (and per tuning trial): what reuse and the per-round tables read.
CELL_FILES = (
    "config.yaml", "summary.json", "metrics.jsonl", "rounds.jsonl", "fusion_weights.jsonl"
)  # fmt: skip
#: At the comparison's top level: its plan, results and figures (PNG, as report.md shows them).
TOP_SUFFIXES = (".json", ".md", ".csv", ".png")  # (vector copies: recomputable)
#: What a comparison writes in a run it copied rather than computed (fedkt.compare).
REUSED = "reused_from.txt"
ARCHIVE = "runs.tar.xz"


def keep(src: Path, dest: Path) -> int:
    """Copy ``src``'s evidence into ``dest`` (replacing what an earlier call kept);
    returns the number of runs archived."""
    if not (src / "compare.json").is_file():
        raise SystemExit(f"keep_evidence: {src} is not a comparison folder (no compare.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in TOP_SUFFIXES:
            shutil.copy2(item, dest / item.name)
    runs = [
        s.parent
        for s in sorted(src.rglob("summary.json"))
        if s.parent != src and not (s.parent / REUSED).exists()
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for run in runs:
            for name in CELL_FILES:
                if (run / name).is_file():
                    tar.add(run / name, arcname=(run / name).relative_to(src).as_posix())
    (dest / ARCHIVE).write_bytes(buffer.getvalue())
    return len(runs)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python scripts/keep_evidence.py RUN_DIR evidence/NAME")
    src, dest = map(Path, argv)
    print(f"kept {keep(src, dest)} finished runs of {src} in {dest / ARCHIVE}")


if __name__ == "__main__":
    main(sys.argv[1:])
