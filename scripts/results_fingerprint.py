"""Digest of what a fixed set of small experiments compute, for checking that a refactor
changes no number.

Runs each case through the `fedkt` command (every strategy, a teacher/student client, two
model tiers with SADE over two views, client sampling with attackers, FedMD's subset) and
hashes its deterministic outputs: metrics.jsonl, rounds.jsonl without wall times, and
fusion_weights.jsonl. Run it before and after a change and compare:

    python scripts/results_fingerprint.py --out before.json      # on the old commit
    python scripts/results_fingerprint.py --out after.json --against before.json

About a minute per case on 2 cores (16 cases).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = ["num_clients=4", "rounds=2", "train.epochs=1", "distill.epochs=1", "transfer.size=200",
        "evaluation.client_test_size=100", "evaluation.global_test_size=200"]  # fmt: skip
STRATEGIES = [
    "local",
    "fedavg",
    "fedprox",
    "fedadam",
    "fkd",
    "fedmd",
    "fd",
    "dsfl",
    "fedproto",
    "feddf",
    "knfu",
]
TIERS = "model.tiers=[{name: mlp, fraction: 0.5}, {name: cnn-small, fraction: 0.5}]"
CASES: dict[str, list[str]] = {
    "default": [],
    **{s: [*TINY, f"strategy={s}"] for s in STRATEGIES},
    "fedmd-subset": [*TINY, "strategy=fedmd", "strategy.params.subset=50"],
    "knfu-student": [*TINY, "model.student=mlp", "model.name=cnn-small"],
    "tiers-sade": [*TINY, "strategy.fusion=sade", "transfer.views=2", TIERS],
    "fkd-frac": [*TINY, "strategy=fkd", "fraction=0.5", "num_clients=6", "faults.byzantine=0.2"],
}


def digest(run: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in ("metrics.jsonl", "rounds.jsonl", "fusion_weights.jsonl"):
        path = run / name
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            for line in lines:
                line.pop("wall_seconds", None)
            out[name] = hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:16]
    summary = json.loads((run / "summary.json").read_text())
    out["alma"] = summary["alma"]
    out["kernels"] = summary.get("kernels", "not recorded")  # another kind: other numbers
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    beside = Path(sys.executable).with_name("fedkt")  # this environment's command first
    default = str(beside) if beside.exists() else (shutil.which("fedkt") or "fedkt")
    parser.add_argument("--fedkt", default=default, help="the fedkt command to run")
    parser.add_argument("--out", required=True, help="JSON file for the digests")
    parser.add_argument("--against", help="a previous --out file to compare with")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    results: dict[str, object] = {}
    for name in args.cases:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                args.fedkt,
                "run",
                "--quiet",
                "--out",
                tmp,
                *(x for o in CASES[name] for x in ("--set", o)),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            results[name] = (
                digest(Path(tmp)) if proc.returncode == 0 else {"error": proc.stderr.strip()[-300:]}
            )
        print(name, results[name], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.against:
        before = json.loads(Path(args.against).read_text())
        differ = [n for n in results if before.get(n) != results[n]]
        print("identical" if not differ else f"differ: {', '.join(differ)}")
        elsewhere = [
            n
            for n in differ
            if isinstance(before.get(n), dict)
            and isinstance(results[n], dict)
            and before[n].get("kernels") != results[n].get("kernels")
        ]
        if elsewhere:
            print(
                f"note: {', '.join(elsewhere)} ran on other kernels than in {args.against} "
                "(another kind of machine): its numbers may differ with no change to the code"
            )
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
