"""Comparison cells in parallel: one job process per slot, each with its own engine.

One cell uses at most as many cores as it has clients training at once, and less while
its server aggregates and evaluates; a comparison finishes sooner when several cells run
side by side, even on 2 cores (:func:`plan_jobs`). Flower's simulation engine sizes its actor
pool from all the resources of the Ray instance it runs on, so two simulations cannot
share one instance without both claiming every core. Each job is therefore a process of
its own with a Ray instance of ``cores // jobs`` CPUs (``simulation.num_cpus``) that
runs its cells one after another through one engine start-up (:meth:`Simulate.shared`);
the jobs together never hold more CPUs than the machine gives this process
(:func:`plan_jobs`), so nothing is oversubscribed. A cell's numbers do not depend on
where it ran (seeded by seed, client and round; ``tests/test_parallel.py``).

Tasks and replies travel between the parent and its own job processes as JSON over a
pipe (the config as its JSON, never pickled objects).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkt.errors import ConfigError, FedktError, one_line
from fedkt.signals import ends_at_stop, exit_status, handle_sigterm

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from fedkt.cli import Simulate
    from fedkt.config import ExperimentConfig

#: Memory the automatic job count budgets for: a job's fixed part (its process, its Ray
#: instance's GCS, raylet and agents) and each core's client worker, measured with the
#: default comparison (``python -m benchmarks.peak -- fedkt compare --jobs N``: 1 job x 2
#: cores 1.47 GiB, 2 jobs x 1 core 2.42 GiB, before each Ray instance left out 0.16 GiB of
#: daemons (:mod:`fedkt.server.lean_ray`; 2 jobs then 1.91 GiB): kept, as headroom).
#: Bigger models and datasets need more; ``--jobs`` overrides the estimate.
JOB_GIB = 0.6
CORE_GIB = 0.35


def available_gib() -> float | None:
    """Memory the system can give without swapping (``MemAvailable``), or None where
    ``/proc/meminfo`` does not say (then only the cores limit the automatic job count)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:  # pragma: no cover - platforms without /proc
        pass
    return None  # pragma: no cover


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask: a container's or ``taskset``'s
    limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - platforms without affinity masks
        return os.cpu_count() or 1


def parse_jobs(requested: int | str) -> int | str:
    """``requested`` as a job count or ``"auto"``; anything else is a one-line error (the
    one check behind both ``--jobs`` and :func:`plan_jobs`)."""
    if requested == "auto":
        return "auto"
    if isinstance(requested, str) and requested.strip().isdigit():
        requested = int(requested)
    if isinstance(requested, int) and not isinstance(requested, bool) and requested >= 1:
        return requested
    raise ConfigError(f"--jobs {requested!r}: expected a positive number or 'auto'")


def plan_jobs(
    requested: int | str,
    cells: int,
    cpus: int,
    cpus_per_client: float = 1.0,
    memory_gib: float | None = None,
) -> tuple[int, int]:
    """``(jobs, cpus per job)`` for ``cells`` cells on ``cpus`` cores.

    ``requested`` is a count or ``"auto"``: as many jobs as there are cores for (each needs
    room for one client, ``cpus_per_client``), cells, and ``memory_gib`` at :data:`JOB_GIB`
    per job plus :data:`CORE_GIB` per core. Cells side by side beat one cell on all the
    cores because a cell's server steps (aggregation, evaluation) are serial: the default
    comparison on 2 cores took 149 s as 2 jobs of 1 core and 190 s as 1 job of 2
    (BENCHMARKS.md, "Cells in parallel"). More jobs than the cores allow is a one-line
    error, never an oversubscribed machine."""
    room = max(int(cpus // max(cpus_per_client, 1.0)), 1)
    asked = parse_jobs(requested)
    if isinstance(asked, str):
        jobs = min(room, cells)
        if memory_gib is not None:
            jobs = min(jobs, int((memory_gib - cpus * CORE_GIB) // JOB_GIB))
    else:
        jobs = asked
        if jobs > room:
            raise ConfigError(
                f"--jobs {jobs}: this machine gives fedkt {cpus} cores and a job needs at "
                f"least {max(cpus_per_client, 1.0):g} (simulation.num_cpus_per_client); use "
                f"--jobs {room} or fewer"
            )
    jobs = max(1, min(jobs, cells))
    return jobs, cpus // jobs


@dataclass(frozen=True)
class CellTask:
    """One simulation a comparison (or its tuning) has to run."""

    config: ExperimentConfig
    cdir: Path
    name: str  # e.g. "knfu/dirichlet-alpha=0.1/seed-2"
    tag: str = ""  # e.g. "[12/110]"
    resume: bool = False

    def label(self) -> str:
        return f"{self.tag} {self.name}".strip()


def run_cell(simulate: Simulate, config: ExperimentConfig, directory: str, resume: bool) -> dict:
    """One cell through ``simulate``, quietly and without plots (the comparison draws its
    own): the call an in-order comparison and every job process make."""
    from fedkt.progress import NullProgress

    return simulate(config, directory, NullProgress(), resume=resume, plots=False)


def describe(summary: dict[str, Any]) -> str:
    """A finished cell's one-line outcome."""
    alma = summary.get("alma")
    return f"ALMA {'-' if alma is None else f'{100 * alma:.1f}%'}  {summary['wall_seconds']:.1f}s"


# ------------------------------------------------------------------ the job process


def _job_main(conn: Connection, loader: Callable[[], Simulate], num_cpus: int) -> None:
    """A job: run the cells the parent sends, one at a time, through one engine."""
    handle_sigterm()  # stopped by a process manager as by Ctrl-C: finished rounds kept
    try:
        import torch

        from fedkt.config import config_from_json

        torch.set_num_threads(num_cpus)  # the server side of this job's cells
        simulate = loader()
        with ends_at_stop(), simulate.shared():
            while True:
                try:
                    task = json.loads(conn.recv_bytes())
                except EOFError:  # the parent is done with this job
                    return
                try:
                    cfg = config_from_json(task["config"])
                    summary = run_cell(simulate, cfg, task["dir"], task["resume"])
                    reply: dict[str, Any] = {
                        "alma": summary.get("alma"),
                        "wall_seconds": summary["wall_seconds"],
                    }
                except FedktError as exc:
                    reply = {"error": one_line(str(exc))}
                except Exception as exc:  # a bug: its traceback goes to the shared stderr
                    traceback.print_exc()
                    reply = {"error": one_line(f"{type(exc).__name__}: {exc} (traceback above)")}
                conn.send_bytes(json.dumps(reply).encode())
    except KeyboardInterrupt as stop:
        # The cell's finished rounds are on disk (simulate's stop). End now, as the `fedkt`
        # command does: Ray's exit hooks would race Flower's threads still calling into it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_status(stop))


# ------------------------------------------------------------------ the parent


@dataclass(eq=False)
class _Job:
    index: int
    process: BaseProcess
    conn: Connection
    task: CellTask | None = None
    started: float = field(default=0.0)


def _send(job: _Job, task: CellTask) -> None:
    job.conn.send_bytes(
        json.dumps(
            {"config": task.config.to_json(), "dir": str(task.cdir), "resume": task.resume}
        ).encode()
    )
    job.task, job.started = task, time.perf_counter()


def _stop(jobs: Sequence[_Job], grace: float = 15.0) -> None:
    """Stop the jobs the way a terminal's Ctrl-C would: each keeps its cell's finished
    rounds. The signal is forwarded at once: a process manager's SIGTERM may have reached
    this process alone (``timeout``, Docker), and a failed cell stops the others without
    any signal. A job that got the signal itself stops the same way with a second one.
    A job still alive after ``grace`` seconds is killed (its rounds are on disk)."""
    for job in jobs:
        if job.process.is_alive() and job.process.pid is not None:
            try:
                os.kill(job.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for job in jobs:
        job.process.join(max(0.0, deadline - time.monotonic()))
        if job.process.is_alive():
            job.process.kill()
            job.process.join(5)


class JobPool:
    """``jobs`` job processes of ``cpus_per_job`` cores each, started when the first cells
    arrive and kept for every later :meth:`run` (a comparison's tuning trials and then its
    test cells: one engine start-up per job for both).

    Use it as a context manager: leaving the block stops the jobs, at once when it is left
    by an exception (each keeps its cell's finished rounds), otherwise after they have left
    their engines. :meth:`close` lets the jobs go without waiting for them, so the caller
    can draw its report while they shut Ray down."""

    def __init__(
        self,
        jobs: int,
        cpus_per_job: int,
        loader: Callable[[], Simulate],
        log: Callable[[str], None] = print,
    ) -> None:
        self.jobs, self.cpus_per_job, self.loader, self.log = jobs, cpus_per_job, loader, log
        self._running: list[_Job] = []
        self._closed = False

    def __enter__(self) -> JobPool:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            _stop(self._running)
        self.close()
        for job in self._running:
            job.process.join(30)
            if job.process.is_alive():
                job.process.kill()
                job.process.join(5)

    @contextlib.contextmanager
    def session(self) -> Iterator[JobPool]:
        """The jobs' engines, as :func:`fedkt.compare.run_compare` holds an engine: let go
        (:meth:`close`) when the block ends normally; on an exception the pool's own exit
        stops them."""
        yield self
        self.close()

    def close(self) -> None:
        """End of input: each idle job leaves its engine and exits; nothing waits here."""
        self._closed = True
        for job in self._running:
            job.conn.close()

    def _start(self, wanted: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no forked copy of a parent's threads/Ray
        while len(self._running) < min(self.jobs, wanted):
            index = len(self._running)
            parent_end, child_end = ctx.Pipe()
            process = ctx.Process(
                target=_job_main,
                args=(child_end, self.loader, self.cpus_per_job),
                name=f"fedkt-job-{index}",
            )
            process.start()
            child_end.close()
            self._running.append(_Job(index, process, parent_end))

    def run(self, tasks: Sequence[CellTask]) -> None:
        """Run ``tasks`` on the jobs (the placement is written into every task's
        ``simulation.num_cpus``: it does not change results). Returns when all are done;
        the first failed cell stops the others (their finished rounds are kept) and is
        raised as a :class:`FedktError`."""
        if not tasks:
            return
        if self._closed:
            raise RuntimeError("JobPool.run after close")
        pending = deque(tasks)
        try:
            self._start(len(tasks))
            busy: dict[Any, _Job] = {}

            def give_next(job: _Job) -> None:
                if pending:
                    task = _placed(pending.popleft(), self.cpus_per_job)
                    _send(job, task)
                    self.log(f"{task.label()}  (job {job.index})")
                    busy[job.conn] = busy[job.process.sentinel] = job

            for job in self._running:
                give_next(job)
            while busy:
                for ready in wait(list(busy)):
                    found = busy.get(ready)
                    if found is None or found.task is None:
                        continue  # its pipe and its sentinel were both ready
                    job, task = found, found.task
                    try:
                        reply = json.loads(job.conn.recv_bytes())
                    except (EOFError, OSError):
                        job.process.join(5)
                        raise FedktError(
                            f"job {job.index} ended while running {task.name} (exit code "
                            f"{job.process.exitcode})"
                        ) from None
                    if "error" in reply:
                        raise FedktError(f"{task.name}: {reply['error']}")
                    self.log(f"    {task.label()}: {describe(reply)}")
                    job.task = None
                    del busy[job.conn], busy[job.process.sentinel]
                    give_next(job)
        except BaseException:
            _stop(self._running)
            raise


def _placed(task: CellTask, cpus: int) -> CellTask:
    sim = task.config.simulation.model_copy(update={"num_cpus": cpus})
    return CellTask(
        task.config.model_copy(update={"simulation": sim}),
        task.cdir,
        task.name,
        task.tag,
        task.resume,
    )
