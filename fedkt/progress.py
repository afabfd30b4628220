"""Live progress of a run: round, clients done, current ALMA.

:class:`RichProgress` draws a live bar on a terminal and prints one line per round
elsewhere (CI logs); :class:`NullProgress` is silent. The server loop only calls the
methods of :class:`Progress`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.progress import (
    Progress as _RichBar,
)
from rich.table import Table

from fedkt.rounds import RoundRecord


class Progress:
    def start(self, rounds: int, clients: int) -> None: ...
    def phase(self, server_round: int, phase: str, expected: int) -> None: ...
    def client_done(self) -> None: ...
    def round_done(self, line: RoundRecord) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


class NullProgress(Progress):
    pass


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class RunElapsed(ProgressColumn):
    """Time since the run started. Rich's TimeElapsedColumn times the *task*, which
    stops once a phase's clients are all done and never restarts when the next phase
    reuses the task: the column stayed at the first phase's time for the whole run."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.start = clock()

    def render(self, task: Task) -> Any:
        from rich.text import Text

        seconds = int(self.clock() - self.start)
        return Text(str(timedelta(seconds=seconds)), style="progress.elapsed")


class RichProgress(Progress):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.bar: _RichBar | None = None
        self.task: TaskID | None = None
        self.rounds = 0
        self.alma: float | None = None

    def start(self, rounds: int, clients: int) -> None:
        self.rounds = rounds
        if self.live:
            self.bar = _RichBar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[alma]}"),
                RunElapsed(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("starting", total=clients, alma="")

    def phase(self, server_round: int, phase: str, expected: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(
                self.task,
                description=f"round {server_round}/{self.rounds} {phase}",
                total=max(expected, 1),
                completed=0,
                alma=f"ALMA {_pct(self.alma)}",
            )

    def client_done(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def round_done(self, line: RoundRecord) -> None:
        self.alma = line.alma
        text = (
            f"round {line.round}/{self.rounds}  clients {line.participants}  ALMA {_pct(line.alma)}"
            f"  global {_pct(line.global_accuracy)}  worst {_pct(line.worst_client_accuracy)}"
            f"  {line.wall_seconds:.1f}s"
        )
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            self.console.print(text, highlight=False)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def summary_table(summary: dict[str, Any], rounds: list[dict[str, Any]] | None = None) -> Table:
    """The short table a run ends with."""
    t = Table(
        title=(
            f"{summary['name']}: {summary['strategy']} on {summary['dataset']}, "
            f"{summary['num_clients']} clients"
        )
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("ALMA (final round)", _pct(summary.get("alma")))
    t.add_row("best ALMA", _pct(summary.get("best_alma")))
    t.add_row("global-test accuracy (mean)", _pct(summary.get("global_accuracy")))
    t.add_row("worst client", _pct(summary.get("worst_client_accuracy")))
    t.add_row("rounds", str(summary.get("rounds")))
    t.add_row(
        "bytes up / down",
        f"{summary.get('bytes_up', 0) / 1e6:.2f} MB / {summary.get('bytes_down', 0) / 1e6:.2f} MB",
    )
    t.add_row("wall time", f"{summary.get('wall_seconds', 0):.1f} s")
    return t
