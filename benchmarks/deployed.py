"""Deployed rounds against simulated ones: the same experiment, on loopback.

Runs one experiment three ways and prints seconds per round (the first round, which
includes every process's imports, apart from the later ones):

- simulated: ``fedkt run`` in Flower's simulation engine (warm Ray actors);
- deployed, warm: a SuperLink and N SuperNodes with TLS and authentication started by
  deploy/scripts (:mod:`benchmarks.loopback`), each SuperNode's ClientApp tasks run by
  one ``fedkt-clientapp-worker`` (the default of deploy/scripts/supernode.sh);
- deployed, cold (``--cold``): Flower's default, a fresh ``flwr-clientapp`` per message.

Each deployed way runs with the SuperLink's state in a file (deploy/scripts' default:
registrations survive a restart) and in memory (Flower's ``:flwr-in-memory:``, which
does a fraction of the SQL per request), unless ``--state`` picks one: on a small
machine the SuperLink's CPU is taken from the clients' training, so the two differ.

    python -m benchmarks.deployed                  # KnFu, digits, 3 nodes, 4 rounds
    python -m benchmarks.deployed --cold --rounds 3 --state file
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import command, config, fail, print_table, simulate_timed
from benchmarks.loopback import MissingTools, loopback_deployment
from fedkt.data.sources import data_dir
from fedkt.errors import FedktError

#: The SuperLink's state: ``DATABASE`` for deploy/scripts/superlink.sh (None: its default).
STATES: dict[str, str | None] = {"file": None, "memory": ":flwr-in-memory:"}


def _round_seconds(out: Path, log: str = "") -> list[float]:
    path = out / "rounds.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    if not lines:
        raise FedktError(f"{out}: the run recorded no round; its output ended: {log[-400:]}")
    return [json.loads(x)["wall_seconds"] for x in lines]


def _row(way: str, seconds: list[float], wall: float) -> list[str]:
    later = seconds[1:]
    return [
        way,
        f"{seconds[0]:.1f}",
        f"{statistics.mean(later):.2f}" if later else "-",
        f"{max(later):.2f}" if later else "-",
        f"{wall:.0f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deployed", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--strategy", default="knfu")
    parser.add_argument("--cold", action="store_true", help="also Flower's process per message")
    parser.add_argument(
        "--state",
        choices=[*STATES, "both"],
        default="both",
        help="the SuperLink's state: a file (the scripts' default), in memory, or both",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.nodes < 1 or args.rounds < 2:
            raise FedktError("--nodes must be >= 1 and --rounds >= 2 (first round apart)")
        overrides = [
            f"strategy={args.strategy}",
            f"rounds={args.rounds}",
            f"num_clients={args.nodes}",
            *args.overrides,
        ]
        rows, per_round = [], {}
        with tempfile.TemporaryDirectory(prefix="fedkt-deployed-") as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            simulate_timed(config(None, overrides), root / "simulated")
            per_round["simulated"] = _round_seconds(root / "simulated")
            rows.append(_row("simulated", per_round["simulated"], time.perf_counter() - start))
            states = list(STATES) if args.state == "both" else [args.state]
            ways = [
                (f"deployed, {kind}, state in {state}", warm, state)
                for kind, warm in [("warm worker", True), ("cold", False)][: 1 + args.cold]
                for state in states
            ]
            for way, warm, state in ways:
                folder = root / f"{'warm' if warm else 'cold'}-{state}"
                with loopback_deployment(folder, args.nodes, warm, data_dir(), STATES[state]) as d:
                    start = time.perf_counter()
                    proc = d.flwr_run(
                        ",".join([*overrides, "wait_for_nodes=60"]),
                        folder / "results",
                        timeout=300 + 300 * args.rounds,
                    )
                    if proc.returncode != 0:
                        raise FedktError(f"{way}: flwr run failed: {proc.stderr[-500:]}")
                    per_round[way] = _round_seconds(folder / "results", proc.stdout)
                    rows.append(_row(way, per_round[way], time.perf_counter() - start))
        print_table(
            f"{args.strategy}, {args.nodes} clients, {args.rounds} rounds: seconds per round",
            ["way", "round 1 s", "later rounds s (mean)", "later max s", "wall s"],
            rows,
        )
        sim = statistics.mean(per_round["simulated"][1:])
        for way, seconds in per_round.items():
            if way != "simulated":
                print(f"{way}: later rounds {statistics.mean(seconds[1:]) / sim:.2f}x simulated")
        return 0
    except (FedktError, OSError, MissingTools, subprocess.TimeoutExpired) as exc:
        return fail("benchmarks.deployed", exc)


if __name__ == "__main__":
    command(main, "benchmarks.deployed")
