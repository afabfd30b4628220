"""What every benchmark needs: a config from overrides, a timed simulation, the peak
memory of a process tree, and a printed table.

Memory is the peak over time of the *sum* of the proportional set size (PSS) of this
process and all its descendants (the Ray raylet, GCS and workers a simulation starts):
PSS charges a shared page to the processes sharing it in equal parts, so torch's
libraries, mapped by every worker, are counted once in total rather than once per
worker (as a sum of RSS would).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import psutil
from rich.console import Console
from rich.table import Table

from fedkt.config import ExperimentConfig, load_config
from fedkt.errors import one_line
from fedkt.signals import describe, exit_status, handle_sigterm

GIB = 1024**3
MIB = 1024**2


def config(base: str | None, overrides: Sequence[str]) -> ExperimentConfig:
    """An experiment config: a YAML file (or the built-in default) plus overrides."""
    return load_config(base, list(overrides))


def _role(proc: psutil.Process) -> str:
    """A short name for what a process of the tree is: Ray names its workers and daemons
    in their titles (``ray::ClientRunner``, ``raylet``, ``gcs_server``); Python
    daemons are named by their script (``dashboard.py``, ``log_monitor.py``)."""
    cmd = proc.cmdline()
    if not cmd:
        return proc.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0].split(".")[0]
    scripts = [Path(a).name for a in cmd[1:3] if a.endswith(".py")]
    return scripts[0] if scripts else Path(cmd[0]).name


def _tree_usage(
    root: psutil.Process,
) -> tuple[int, dict[tuple[int, float], float], list[tuple[str, int]]]:
    """(PSS of the tree, CPU seconds so far of each of its processes by (pid, start time):
    a pid the system reuses is another process, and each process's (role, PSS))."""
    total, cpu, parts = 0, {}, []
    try:
        tree = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0, cpu, parts  # the tree has exited
    for proc in tree:
        try:
            info = proc.memory_full_info()
            times = proc.cpu_times()
            role = "root" if proc is root else _role(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss = getattr(info, "pss", info.rss)
        total += pss
        parts.append((role, pss))
        cpu[(proc.pid, proc.create_time())] = times.user + times.system
    return total, cpu, parts


class PeakMemory:
    """Samples a process tree (default: this process) in a background thread while the
    ``with`` block runs: ``peak`` is the largest sum of PSS seen, ``at_peak`` each
    process's (role, PSS) in that sample (where the memory goes), ``baseline`` the sum
    when the block started, ``cpu_seconds`` the user + system time of every process seen
    in the tree (as last sampled: a process that exits between two samples loses at most
    one interval of it)."""

    def __init__(self, pid: int | None = None, interval: float = 0.25) -> None:
        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.at_peak: list[tuple[str, int]] = []
        self.last: list[tuple[str, int]] = []
        self.baseline = 0
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        now, cpu, parts = _tree_usage(self.root)
        self.last = parts  # each process's (role, PSS) in this sample
        self._cpu.update(cpu)
        if now > self.peak:
            self.peak, self.at_peak = now, parts
        return now

    def composition(self) -> str:
        """``at_peak`` in one line, largest first, processes of one role summed:
        ``ray::ClientRunner 2x0.45, root 0.28, ...`` (GiB)."""
        roles: dict[str, list[int]] = {}
        for role, pss in self.at_peak:
            roles.setdefault(role, []).append(pss)
        parts = sorted(roles.items(), key=lambda kv: -sum(kv[1]))
        return ", ".join(
            f"{role} {len(v)}x{sum(v) / len(v) / GIB:.2f}"
            if len(v) > 1
            else f"{role} {v[0] / GIB:.2f}"
            for role, v in parts
        )

    def __enter__(self) -> PeakMemory:
        self.baseline = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def simulate_timed(cfg: ExperimentConfig, out: str | Path) -> dict[str, Any]:
    """Run ``cfg`` in Flower's simulation engine; the summary, each round's line and the
    wall time of the whole call (engine start, handshake and shutdown included)."""
    from fedkt.server.simulation import simulate

    start = time.perf_counter()
    summary = simulate(cfg, str(out))
    wall = time.perf_counter() - start
    rounds = [json.loads(line) for line in (Path(out) / "rounds.jsonl").read_text().splitlines()]
    return {"summary": summary, "rounds": rounds, "wall": wall}


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    console: Console | None = None,
) -> None:
    """A rich table, right-aligned figures (also readable when piped into a file)."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    (console or Console(width=160)).print(table)


def fail(prog: str, exc: Exception) -> int:
    """A user mistake (bad size, missing data) as one line on stderr, exit status 2."""
    print(one_line(f"{prog}: error: {exc}"), file=sys.stderr)
    return 2


def command(main: Callable[[], int | None], name: str) -> NoReturn:
    """Run a benchmark's ``main`` as a command. Ctrl-C and SIGTERM (``timeout``, a batch
    system) end it with one line and the shell's exit status (130, 143), not a traceback,
    and at once: the simulation engine's threads would otherwise hold the process open."""
    handle_sigterm()
    try:
        code = main()
    except KeyboardInterrupt as stop:
        print(f"{name}: {describe(stop)}; the figures measured so far are above", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_status(stop))
    sys.exit(code or 0)
