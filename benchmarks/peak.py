"""The peak memory of any command's process tree, with where it was at the peak.

    python -m benchmarks.peak -- fedkt run --set rounds=3        # any command after --
    python -m benchmarks.peak --interval 0.15 --series mem.txt -- fedkt compare

Runs the command, samples the proportional set size (PSS) of it and every process it
starts (Ray's daemons and workers included: see :mod:`benchmarks.harness`) every
``--interval`` seconds, and prints the wall time, the peak of the tree's sum, the moment it
was reached, and each process's share at that moment. ``--series`` also writes every
sample (seconds, total GiB, then ``role:GiB`` per process), to see *when* a transient
happens and which process holds it. The command's exit status is passed on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import GIB, PeakMemory, command, fail


class _Series(PeakMemory):
    """:class:`PeakMemory` that also writes every sample to a file."""

    def __init__(self, pid: int, interval: float, out: Path | None) -> None:
        super().__init__(pid, interval)
        self._out = out.open("w") if out is not None else None
        self._start = time.perf_counter()
        self.peak_at = 0.0

    def sample(self) -> int:
        before = self.peak
        now = super().sample()
        if self.peak > before:
            self.peak_at = time.perf_counter() - self._start
        if self._out is not None:
            row = " ".join(f"{role}:{pss / GIB:.3f}" for role, pss in self.last)
            self._out.write(f"{time.perf_counter() - self._start:.2f} {now / GIB:.3f} {row}\n")
        return now

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._out is not None:
            self._out.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peak",
        description="Peak PSS of a command's process tree, and where it was at the peak.",
    )
    parser.add_argument("--interval", type=float, default=0.15, help="seconds between samples")
    parser.add_argument("--series", type=Path, help="write every sample to this file")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        if not cmd:
            raise ValueError("no command given (put it after --)")
        if args.interval <= 0:
            raise ValueError(f"--interval must be positive, got {args.interval}")
        start = time.perf_counter()
        child = subprocess.Popen(cmd)
    except (ValueError, OSError) as exc:
        return fail("benchmarks.peak", exc)
    with _Series(child.pid, args.interval, args.series) as mem:
        code = child.wait()
    wall = time.perf_counter() - start
    print(
        f"peak {mem.peak / GIB:.3f} GiB at {mem.peak_at:.1f} s of {wall:.1f} s wall: "
        f"{mem.composition()}; CPU {mem.cpu_seconds:.1f} s",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    command(main, "benchmarks.peak")
