"""The live progress display: its elapsed time is the run's, across phases and rounds."""

import io

from rich.console import Console

from fedkt.progress import RichProgress, RunElapsed
from fedkt.rounds import RoundRecord


def test_elapsed_time_keeps_running_across_phases():
    now = [100.0]
    column = RunElapsed(clock=lambda: now[0])
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = RichProgress(console)
    progress.start(rounds=3, clients=2)
    assert progress.bar is not None and isinstance(progress.bar.columns[-1], RunElapsed)
    progress.bar.columns = (*progress.bar.columns[:-1], column)
    task = progress.bar.tasks[0]
    seen = []
    for server_round in (1, 2, 3):
        for phase in ("train", "evaluate"):
            progress.phase(server_round, phase, 2)
            progress.client_done()
            progress.client_done()  # the phase's task is complete here
            now[0] += 9.0
            seen.append(str(column.render(task)))
        progress.round_done(RoundRecord(round=server_round, alma=0.5))
    progress.finish({})
    assert seen == ["0:00:09", "0:00:18", "0:00:27", "0:00:36", "0:00:45", "0:00:54"]
