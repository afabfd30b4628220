"""The ``fedkt`` command line.

    fedkt run [CONFIG] [--set KEY=VALUE ...] [--out DIR]
    fedkt compare [CONFIG] [--set KEY=VALUE ...] [--out DIR]
    fedkt data fetch NAME [--data-dir DIR]
    fedkt data list
    fedkt strategies

User mistakes end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from fedkt.errors import ConfigError, FedktError, one_line
from fedkt.signals import describe, ends_at_stop, exit_status, handle_sigterm

if TYPE_CHECKING:
    from fedkt.config import ExperimentConfig

EXIT_USER_ERROR = 2


class Simulate(Protocol):
    """A simulation engine, provided by the apps layer (:mod:`fedkt.server.cli`).
    Calling it runs one experiment: (experiment, results dir, progress, verbose=...,
    resume=...) -> summary; ``shared()`` is a context in which successive calls reuse
    one engine start-up (Ray and warm workers) instead of paying it per call."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def shared(self) -> AbstractContextManager[None]: ...


def _field_lines(model: Any, prefix: str = "") -> list[str]:
    """``--help`` text for every config field, generated from the schema itself."""
    from pydantic import BaseModel

    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(_field_lines(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        desc = f"  {field.description}" if field.description else ""
        lines.append(f"  {key:<34} default {default!r}{desc}")
    return lines


def _run_epilog() -> str:
    from fedkt.config import ExperimentConfig
    from fedkt.experiment import strategy_names

    return (
        "Without CONFIG, runs the built-in default: KnFu on scikit-learn digits, 10 non-IID "
        "clients.\n"
        f"Strategies: {', '.join(strategy_names())} (see `fedkt strategies`).\n"
        "Shorthands: `strategy: knfu` = `strategy: {name: knfu}`; `model: cnn-small`.\n\n"
        "Config fields (YAML keys, or --set KEY=VALUE with dotted keys):\n"
        + "\n".join(_field_lines(ExperimentConfig))
    )


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and fedkt's exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(one_line(f"{self.prog}: error: {message} (see {self.prog} --help)"), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _add_set(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{help_text} (repeatable)",
    )


def _add_ray_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the simulated clients on an existing Ray cluster ('auto', or HOST:PORT of its "
        "head node, see `ray start --head`); same as --set simulation.ray_address=ADDR, and "
        "allowed with --resume (placement does not change results)",
    )


def _jobs(text: str) -> int | str:
    from fedkt.parallel import parse_jobs

    try:
        return parse_jobs(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")


def _placed(cfg: ExperimentConfig, address: str | None) -> ExperimentConfig:
    """``cfg`` run on the Ray cluster at ``address`` (unchanged without one)."""
    if address is None:
        return cfg
    from fedkt.config import ExperimentConfig

    data = json.loads(cfg.to_json())
    data["simulation"]["ray_address"] = address
    return ExperimentConfig.model_validate(data)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedkt", description="Federated knowledge transfer on Flower.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run one experiment in Flower's simulation engine",
        description=(
            "Run one federated experiment (simulated SuperNodes, one per client) and write its "
            "results."
        ),
        epilog=_run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "config", nargs="?", help="YAML experiment file (default: the built-in digits experiment)"
    )
    _add_set(run, "override a config field, e.g. --set rounds=3 --set partition.alpha=0.1")
    run.add_argument(
        "--out", metavar="DIR", help="results directory (default: runs/<date>-<name>/)"
    )
    run.add_argument(
        "--quiet", action="store_true", help="no progress or table, only the results path"
    )
    run.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    _add_ray_address(run)
    run.add_argument(
        "--check",
        action="store_true",
        help="only validate the config (and the data layout, if the data is present)",
    )
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in results directory DIR from its last round checkpoint "
        "(its config.yaml is used; CONFIG and --set are not allowed)",
    )

    comp = sub.add_parser(
        "compare",
        help="run a matrix of strategies x partitions x seeds and write a report",
        description=(
            "Run a comparison matrix (resumable: re-run with the same --out to continue) and "
            "write report.md, results.csv and plots. Without CONFIG, runs the built-in default "
            "comparison (every strategy on digits, Dirichlet alpha 0.1 and 1.0, five seeds, "
            "each strategy's step size first tuned on validation data; "
            "simulations/compare_default.yaml spells it out)."
        ),
        epilog=(
            "A comparison file has: name, base (an experiment YAML path, 'default', or a "
            "mapping), set (overrides for every cell), strategies (names or mappings like "
            "{name: knfu, fusion_params: {beta: 5}, label: knfu-b5}), partitions (mappings of "
            "partition fields, optional label), seeds (list of ints)."
        ),
    )
    comp.add_argument(
        "config", nargs="?", help="comparison YAML (default: the built-in comparison)"
    )
    _add_set(comp, "override a field of every cell's experiment, e.g. --set rounds=3")
    comp.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: runs/<date>-compare-<name>/); reuse it to resume",
    )
    comp.add_argument(
        "--reuse",
        metavar="DIR",
        action="append",
        default=[],
        help="results folder (a comparison, or any folder of runs) whose finished runs stand in "
        "for identical cells: same resolved config (its name aside), same fedkt code and "
        "kernels of this machine's kind; copied, not rerun (repeatable)",
    )
    comp.add_argument(
        "--check", action="store_true", help="only validate the comparison and every cell's config"
    )
    _add_ray_address(comp)
    comp.add_argument(
        "--jobs",
        metavar="N",
        default="auto",
        type=_jobs,
        help="cells run side by side, each job a process with its own engine and an equal "
        "share of the cores (default: auto, one job per core as far as memory allows, "
        "about 1 GiB each; more jobs than cores is refused). Placement only: results are "
        "the same",
    )

    data = sub.add_parser("data", help="obtain and list datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    fetch = dsub.add_parser(
        "fetch", help="download (or find offline) a dataset and verify its checksums"
    )
    fetch.add_argument("name", help="dataset name (see `fedkt data list`)")
    fetch.add_argument(
        "--data-dir", help="where datasets live (default: $FEDKT_DATA or ~/.cache/fedkt/data)"
    )
    dsub.add_parser("list", help="list known datasets and whether they are present")

    sub.add_parser(
        "strategies", help="list strategies, the knowledge each exchanges, and their parts"
    )
    return parser


def _missing_data(cfg: Any) -> list[str]:
    """Datasets ``cfg`` needs whose files are absent or fail their checksums."""
    from fedkt.data.sources import DATASETS, data_dir, verify_files

    root = data_dir(cfg.data_dir)
    return sorted(
        name
        for name in {cfg.dataset, cfg.transfer.source} - {"train"}
        if name in DATASETS  # a named one (hf:, csv:, ...) is read where it is
        and DATASETS.create(name).files
        and verify_files(DATASETS.create(name), root / name)
    )


def _ensure_data(cfg: Any, log) -> None:
    """Fetch (and verify) any dataset ``cfg`` needs that is not present yet."""
    from fedkt.data.fetch import fetch
    from fedkt.data.sources import data_dir

    for name in _missing_data(cfg):
        fetch(name, data_dir(cfg.data_dir) / name, log=log)


def _check(configs: list[Any]) -> int:
    """--check: the configs are valid (they loaded); also build each data layout whose
    data is present, which catches layouts the data cannot satisfy."""
    from fedkt.data.federation import federation_for

    skipped = set()
    for cfg in configs:
        missing = _missing_data(cfg)
        if missing:
            skipped.update(missing)
        else:
            federation_for(cfg)
    note = (
        f" (data layout not checked: {', '.join(sorted(skipped))} not fetched)" if skipped else ""
    )
    print(f"fedkt: {len(configs)} config(s) OK{note}")
    return 0


def _resumable(folder: str) -> Any:
    """The config of a results directory that can be resumed (a one-line error if not)."""
    from pathlib import Path

    from fedkt.checkpoint import load_server
    from fedkt.config import load_config

    if not (Path(folder) / "config.yaml").exists():
        raise ConfigError(f"--resume {folder}: not a fedkt results directory (no config.yaml)")
    cfg = load_config(Path(folder) / "config.yaml")
    done = load_server(folder)["round"]
    if done >= cfg.rounds and (Path(folder) / "summary.json").exists():
        raise ConfigError(f"--resume {folder}: the run already finished all {cfg.rounds} rounds")
    return cfg


def _interrupted(stop: KeyboardInterrupt, message: str) -> NoReturn:
    """Ctrl-C or SIGTERM during a simulation: say where the results are and end the
    process now. Flower's engine and Ray keep non-daemon threads that would otherwise hold
    the process open; everything on disk is already consistent (atomic writes, round
    checkpoints)."""
    print(f"fedkt: {describe(stop)}; {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status(stop))


def _cmd_run(args: argparse.Namespace, simulator: Callable[[], Simulate]) -> int:
    from rich.console import Console

    from fedkt.config import load_config
    from fedkt.experiment import resolve
    from fedkt.progress import NullProgress, RichProgress, summary_table
    from fedkt.results import default_out_dir

    if args.resume:
        if args.config or args.overrides or args.out:
            raise ConfigError(
                "--resume DIR continues DIR with its own config.yaml; drop CONFIG, --set and --out"
            )
        cfg, args.out = _resumable(args.resume), args.resume
    else:
        cfg = load_config(args.config, args.overrides)
    cfg = _placed(cfg, args.ray_address)
    exp = resolve(cfg)
    console = Console(stderr=True)
    if args.check:
        return _check([cfg])
    _ensure_data(cfg, (lambda m: None) if args.quiet else console.print)
    out = args.out or str(default_out_dir(cfg))
    simulate = simulator()
    progress = NullProgress() if args.quiet else RichProgress(console)
    if not args.quiet:
        console.print(
            f"fedkt: {cfg.name}: strategy {cfg.strategy.name}, {cfg.num_clients} clients on "
            f"{cfg.dataset}, "
            f"{cfg.rounds} rounds -> {out}"
        )
    try:
        summary = simulate(exp, out, progress, verbose=args.verbose, resume=bool(args.resume))
    except KeyboardInterrupt as stop:
        _interrupted(
            stop, f"finished rounds are kept in {out}; continue with: fedkt run --resume {out}"
        )
    if not args.quiet:
        Console().print(summary_table(summary))
    print(out)
    return 0


def _cmd_compare(args: argparse.Namespace, simulator: Callable[[], Simulate]) -> int:
    from pathlib import Path

    from rich.console import Console

    from fedkt.compare import load_compare, run_compare, run_in_order
    from fedkt.parallel import (
        CellTask,
        JobPool,
        available_cpus,
        available_gib,
        describe,
        plan_jobs,
        run_cell,
    )
    from fedkt.results import default_out_dir

    comp, cells = load_compare(args.config, args.overrides)
    cells = [dataclasses.replace(c, config=_placed(c.config, args.ray_address)) for c in cells]
    console = Console(stderr=True)
    if args.check:
        return _check([c.config for c in cells])
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    if args.ray_address is not None:
        if args.jobs not in ("auto", 1):
            raise ConfigError(
                "--jobs with --ray-address: the cluster's Ray instance already spreads one "
                "comparison's clients over all its nodes; drop --jobs"
            )
        jobs, cpus_per_job = 1, 0
    else:
        jobs, cpus_per_job = plan_jobs(
            args.jobs,
            len(cells),
            available_cpus(),
            max(c.config.simulation.num_cpus_per_client for c in cells),
            available_gib(),
        )
    for cfg in {c.config.dataset: c.config for c in cells}.values():
        _ensure_data(cfg, console.print)
    out = (
        Path(args.out)
        if args.out
        else Path(
            default_out_dir(cells[0].config.model_copy(update={"name": f"compare-{comp.name}"}))
        )
    )
    # in order, this process runs every cell through one engine; with jobs, each job
    # process loads its own (once, for tuning trials and test cells alike) and this one
    # never needs it
    simulate = simulator() if jobs == 1 else None
    pool = JobPool(jobs, cpus_per_job, simulator, log) if jobs > 1 else None

    def one_cell(task: CellTask) -> None:
        assert simulate is not None
        log(f"    {describe(run_cell(simulate, task.config, str(task.cdir), task.resume))}")

    def run_cells(tasks: Sequence[CellTask]) -> None:
        if pool is not None:
            pool.run(tasks)
        else:
            run_in_order(one_cell, log)(tasks)

    jobs_note = f", {jobs} jobs x {cpus_per_job} cores" if jobs > 1 else ""
    console.print(f"fedkt compare: {comp.name}: {len(cells)} cells -> {out}{jobs_note}")
    try:
        # one engine start-up for every cell (each job process has its own), stopped
        # before the report is drawn: in order, this process's engine is gone first; jobs
        # shut theirs down while the report is drawn, and the pool's exit waits for them
        with pool if pool is not None else contextlib.nullcontext():
            result = run_compare(
                comp,
                cells,
                out,
                run_cells,
                log=log,
                reuse=[Path(d) for d in args.reuse],
                engine=(
                    simulate.shared
                    if simulate is not None
                    else pool.session if pool is not None else contextlib.nullcontext
                ),
            )
    except KeyboardInterrupt as stop:
        _interrupted(
            stop,
            f"finished cells (and the interrupted cell's rounds) are kept in {out}; run the same "
            "command again to continue",
        )
    console.print(f"report: {out / 'report.md'} ({result['finished']}/{result['cells']} cells)")
    print(out)
    return 0


def _cmd_data(args: argparse.Namespace, simulator: Callable[[], Simulate]) -> int:
    from fedkt.data.fetch import fetch
    from fedkt.data.sources import DATASETS, data_dir, verify_files

    if args.data_command == "fetch":
        root = data_dir(args.data_dir)
        fetch(args.name, root / args.name)
        return 0
    root = data_dir()
    for name in DATASETS.names():
        spec = DATASETS.create(name)
        state = (
            "built in"
            if not spec.files
            else ("present" if not verify_files(spec, root / name) else "not fetched")
        )
        print(f"{name:<14} {state:<12} {spec.description}")
    print(
        "also by name: hf:NAME (Hugging Face), csv:PATH, parquet:PATH, imagefolder:DIR "
        "(see `data:` in the config reference)"
    )
    print(f"data directory: {root}")
    return 0


def _cmd_strategies(args: argparse.Namespace, simulator: Callable[[], Simulate]) -> int:
    from fedkt.experiment import strategy_names
    from fedkt.method import METHODS

    names = strategy_names()
    width = max(map(len, names))
    for name in names:
        m = METHODS.create(name)
        received = "taken in by the method, not distilled" if m.adopts_targets else f"loss={m.loss}"
        parts = [f"knowledge={m.knowledge} fusion={m.fusion} {received}"] if m.knowledge else []
        if m.averaging:
            parts.append(f"weights via Flower {m.averaging}")
        elif m.shares_weights:
            parts.append("weights averaged + server step")
        print(f"{name:<{width}} {m.description}")
        print(
            f"{'':<{width}} exchanges: {m.exchanges}" + (f"  [{'; '.join(parts)}]" if parts else "")
        )
    return 0


def _no_simulator() -> Simulate:
    raise FedktError("no simulation engine was given to this entry point; use the `fedkt` command")


def main(
    argv: Sequence[str] | None = None, simulator: Callable[[], Simulate] = _no_simulator
) -> int:
    """Parse ``argv`` and run the command. ``simulator`` loads the simulation engine
    (only for commands that simulate), so the core never imports the Flower apps."""
    handle_sigterm()  # a process manager's stop ends a run as Ctrl-C does
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        handlers = {
            "run": _cmd_run,
            "compare": _cmd_compare,
            "data": _cmd_data,
            "strategies": _cmd_strategies,
        }
        with ends_at_stop():  # run and compare end the process at a stop (_interrupted)
            return handlers[args.command](args, simulator)
    except FedktError as exc:
        print(f"fedkt: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:
        elapsed = time.perf_counter() - started
        print(f"fedkt: {describe(stop)} after {elapsed:.0f}s", file=sys.stderr)
        return exit_status(stop)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
