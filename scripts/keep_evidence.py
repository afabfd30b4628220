"""Copy a finished (or partly finished) comparison into ``evidence/``, the tracked record
of the runs behind the numbers in docs/.

    python scripts/keep_evidence.py runs/mnist-alpha05 evidence/mnist-alpha05

Why: a comparison on 2 CPU cores takes hours to days and a working checkout is not
kept between sessions, so runs/ (ignored by git) is lost. What is kept is what makes a
number traceable and what ``fedkt compare --reuse`` needs to stand in for a cell
(``config.yaml`` and ``summary.json``, whose code digest must match), plus each cell's
per-round and per-client records: the comparison's plan, report, tables and figures,
and per cell its config, summary and ``*.jsonl`` records. Checkpoints (model weights)
and per-cell figures are left out: they are large and can be recomputed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: Per cell (and per tuning trial): what reuse and the per-round tables read.
CELL_FILES = (
    "config.yaml", "summary.json", "metrics.jsonl", "rounds.jsonl", "fusion_weights.jsonl"
)
#: At the comparison's top level: its plan, results and figures.
TOP_SUFFIXES = (".json", ".md", ".csv", ".png", ".pdf", ".svg")


def keep(src: Path, dest: Path) -> int:
    """Copy ``src``'s evidence into ``dest`` (replacing what an earlier call copied);
    returns the number of cells kept."""
    if not (src / "compare.json").is_file():
        raise SystemExit(f"keep_evidence: {src} is not a comparison folder (no compare.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in TOP_SUFFIXES:
            shutil.copy2(item, dest / item.name)
    cells = 0
    for summary in sorted(src.rglob("summary.json")):
        run = summary.parent
        if run == src:
            continue
        target = dest / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in CELL_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        cells += 1
    return cells


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python scripts/keep_evidence.py RUN_DIR evidence/NAME")
    src, dest = map(Path, argv)
    print(f"kept {keep(src, dest)} finished runs of {src} in {dest}")


if __name__ == "__main__":
    main(sys.argv[1:])
