"""The experiment loop run by the ServerApp (in simulation and in deployment alike).

It drives any Flower strategy (fedkt's knowledge strategies or Flower's own FedAvg,
FedProx, FedAdam) through rounds of train + evaluate, and around the strategy it
measures what a fair comparison needs: seeded client sampling shared by all strategies,
per-client metrics, bytes on the wire, participation and wall time, written to the
results directory as they come.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies

from fedkt import protocol as P
from fedkt.checkpoint import checkpoint_dir, load_server, save_server
from fedkt.config import ExperimentConfig
from fedkt.errors import FedktError
from fedkt.experiment import Experiment
from fedkt.learner import Learner
from fedkt.monitoring import MetricsExporter
from fedkt.polling import quiet_pause
from fedkt.progress import NullProgress, Progress
from fedkt.results import ResultsWriter
from fedkt.rounds import RoundRecord, RoundReport
from fedkt.seeding import rng
from fedkt.server.linkstate_index import reply_signal
from fedkt.server.wire import total_bytes
from fedkt.strategies import build_strategy
from fedkt.strategies.base import partition_of


class ExperimentError(FedktError):
    """The federation could not run the experiment (too few nodes, bad handshake)."""


class NodeView(Grid):
    """A Grid that shows a strategy only some nodes (the round's sample) and forwards
    everything else to the real grid."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    # Grid's abstract interface, forwarded explicitly.
    def set_run(self, run_id):
        return self._grid.set_run(run_id)  # noqa: E704

    @property
    def run(self):
        return self._grid.run  # noqa: E704

    def create_message(self, *a, **k):
        return self._grid.create_message(*a, **k)  # noqa: E704

    def get_nodes(self):
        return [n for n in self._grid.get_nodes() if n.node_id in self._nodes]  # noqa: E704

    def push_messages(self, messages):
        return self._grid.push_messages(messages)  # noqa: E704

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)  # noqa: E704

    def send_and_receive(self, messages, *, timeout=None):
        return self._grid.send_and_receive(messages, timeout=timeout)  # noqa: E704


class RunStopped(Exception):
    """The driver asked the run to stop (Ctrl-C in simulation): finished rounds and their
    checkpoints are kept, no summary is written, ``--resume`` continues."""


def _never() -> bool:
    return False


#: Who is who without asking: partition id -> node id of every node, or None when not
#: known (the engine that started the nodes may know; a deployed SuperLink does not).
Directory = Callable[[Grid], "dict[int, int] | None"]


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    on_reply: Callable[[Message], None] | None = None,
    stopped: Callable[[], bool] = _never,
) -> list[Message]:
    """Push ``messages`` and collect replies as they arrive (``on_reply`` per reply) until
    all are in, ``timeout`` seconds pass (late clients are simply absent) or ``stopped()``."""
    ids = set(grid.push_messages(list(messages)))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    replied = reply_signal(grid)
    news = time.monotonic()  # when the last reply (or the push) came
    while ids and time.monotonic() < deadline:
        if stopped():
            raise RunStopped
        if replied is not None:
            replied.clear()  # before the pull: a reply stored during it still wakes the wait
        for msg in grid.pull_messages(list(ids)):
            ids.discard(msg.metadata.reply_to_message_id)
            replies.append(msg)
            news = time.monotonic()
            if on_reply is not None:
                on_reply(msg)
        if ids:
            _wait_for_replies(len(ids), replied, time.monotonic() - news)
    return replies


#: A deployed ServerApp waits this share of the time since the last reply (or the push)
#: before pulling again, at most ``QUIET_POLL_CAP`` seconds (:func:`fedkt.polling.quiet_pause`).
QUIET_POLL_SHARE = 1 / 8
QUIET_POLL_CAP = 0.15


def poll_pause(outstanding: int, quiet_for: float, deployed: bool) -> float:
    """Seconds between two pulls of replies.

    Each pull validates every outstanding message under the LinkState's lock, so pull
    less often while many replies are outstanding (0.02 s for a few, 0.5 s for a
    thousand): the clients' work, not the polling, should use the CPU. A deployed
    ServerApp's pull is an HTTP request that costs the SuperLink several ms of CPU
    (SQL on its state): measured on 2 cores, pulling every 0.02 s took about a third of
    the SuperLink's CPU, away from the clients' training. So it also slows down while
    nothing arrives (a quiet backoff): a reply that comes after ``t`` quiet seconds is
    seen at most ``t / 8`` late (0.15 s at most), and the replies that follow it (clients
    finishing together) at the next pull."""
    by_count = min(0.5, 0.02 + 0.0005 * outstanding)
    if not deployed:
        return by_count
    return max(by_count, quiet_pause(quiet_for, by_count, QUIET_POLL_CAP, QUIET_POLL_SHARE))


def _wait_for_replies(outstanding: int, replied: threading.Event | None, quiet_for: float) -> None:
    """Pause between pulls (:func:`poll_pause`). In a simulation (``replied``, set by
    each stored reply) a few outstanding replies are pulled as soon as one is stored:
    polling every 0.02 s had each phase of a round wait 10 ms on average for its last
    reply."""
    pause = poll_pause(outstanding, quiet_for, deployed=replied is None)
    if replied is None or outstanding > 40:
        time.sleep(pause)
    else:
        replied.wait(pause)


def wait_for_nodes(grid: Grid, wanted: int, timeout: float) -> list[int]:
    """Node ids once ``wanted`` nodes are connected, or whatever is there after ``timeout``."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= wanted or time.monotonic() > deadline:
            return nodes
        if not announced and timeout > 5:
            log(
                INFO, "waiting up to %.0fs for %d nodes (%d connected)", timeout, wanted, len(nodes)
            )
            announced = True
        time.sleep(0.1)


def handshake(
    grid: Grid, cfg: ExperimentConfig, checkpoints: str = "", resume_round: int = 0
) -> tuple[dict[int, int], dict[int, str], dict[int, str], int]:
    """Send the config to every node (with where to checkpoint, and the round to resume
    from); learn partition id -> node id, architectures and kernels."""
    nodes = wait_for_nodes(grid, cfg.num_clients, cfg.wait_for_nodes)
    if len(nodes) < cfg.min_clients:
        raise ExperimentError(
            f"only {len(nodes)} nodes connected, min_clients is {cfg.min_clients}"
        )
    mapping, archs, kernels, nbytes = configure_nodes(grid, cfg, nodes, checkpoints, resume_round)
    if len(mapping) < cfg.min_clients:
        raise ExperimentError(
            f"only {len(mapping)} of {len(nodes)} nodes completed the handshake "
            f"(min_clients={cfg.min_clients})"
        )
    if len(mapping) < cfg.num_clients:
        log(WARNING, "%d of %d clients present; running with those", len(mapping), cfg.num_clients)
    return mapping, archs, kernels, nbytes


def configure_nodes(
    grid: Grid,
    cfg: ExperimentConfig,
    nodes: list[int],
    checkpoints: str = "",
    resume_round: int = 0,
    state_on_disk: bool = False,
) -> tuple[dict[int, int], dict[int, str], dict[int, str], int]:
    """The handshake with ``nodes``: send each the config (with where to checkpoint, the
    round to resume from and whether to keep its model in its checkpoint only); return
    partition id -> node id, architecture and kernels (what its numbers are computed on:
    "not recorded" from a client too old to say) of those that answered, and the bytes
    both ways."""
    content = RecordDict(
        {
            P.EXPERIMENT: ConfigRecord(
                {
                    P.EXPERIMENT_KEY: cfg.to_json(),
                    P.CHECKPOINT_DIR: checkpoints,
                    P.RESUME_ROUND: resume_round,
                    P.STATE_ON_DISK: state_on_disk,
                }
            )
        }
    )
    msgs = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    sent = total_bytes(msgs)
    # Cold nodes import torch and build their data here: a setup step, allowed as long as
    # nodes are given to appear (a short round_timeout must not fail the handshake).
    replies = exchange(grid, msgs, max(cfg.round_timeout, cfg.wait_for_nodes))
    mapping: dict[int, int] = {}
    archs: dict[int, str] = {}
    kernels: dict[int, str] = {}
    for msg in replies:
        if msg.has_error():
            log(
                WARNING,
                "node %s failed the handshake: %s",
                msg.metadata.src_node_id,
                msg.error.reason,
            )
            continue
        try:
            pid = int(msg.content[P.METRICS][P.PARTITION_ID])
            arch = str(msg.content[P.ARCH]["architecture"])
            computes_on = str(msg.content[P.ARCH].get(P.KERNELS, "not recorded"))[:500]
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
            log(
                WARNING,
                "node %s sent a malformed handshake reply; ignoring it",
                msg.metadata.src_node_id,
            )
            continue
        if pid in mapping:
            raise ExperimentError(
                f"nodes {mapping[pid]} and {msg.metadata.src_node_id} both claim partition {pid}"
            )
        mapping[pid] = msg.metadata.src_node_id
        archs[pid] = arch
        kernels[pid] = computes_on
        resumed = msg.content[P.METRICS].get(P.RESUMED_ROUND, -1)
        if resume_round > 0 and resumed < 0:
            log(
                WARNING,
                "client %d has no checkpoint up to round %d: it restarts from its initial model",
                pid,
                resume_round,
            )
    return mapping, archs, kernels, sent + total_bytes(replies)


def _lost_state(replies: list[Message], nodes: dict[int, int]) -> set[int]:
    """Partitions whose train or evaluate reply says their node has no experiment (it
    restarted after its handshake, maybe between the round's train and evaluate calls):
    the ClientApp raised :class:`fedkt.errors.MissedHandshake`."""
    partition = {n: p for p, n in nodes.items()}
    return {
        partition[m.metadata.src_node_id]
        for m in replies
        if m.has_error()
        and P.MISSED_HANDSHAKE in (m.error.reason or "")
        and m.metadata.src_node_id in partition
    }


def sample_partitions(cfg: ExperimentConfig, available: list[int], server_round: int) -> list[int]:
    """Partitions taking part in a round: seeded by partition id, identical for every
    strategy under one seed."""
    k = cfg.clients_per_round(len(available))
    if k == len(available):
        return sorted(available)
    return sorted(
        rng(cfg.seed, "sample", server_round)
        .choice(sorted(available), size=k, replace=False)
        .tolist()
    )


def _ordered(replies: list[Message]) -> list[Message]:
    """Replies sorted by partition id: aggregation order (hence float rounding) is then
    independent of arrival order, which keeps runs bit-for-bit reproducible."""
    return sorted(
        replies,
        key=lambda m: (
            m.has_error(),
            partition_of(m) if not m.has_error() else m.metadata.src_node_id,
        ),
    )


def _aggregation_failed(phase: str, server_round: int, exc: Exception) -> str:
    """Log a failed aggregation (with its traceback, for bug reports) and describe it."""
    kind = "skipped" if isinstance(exc, InconsistentMessageReplies) else "failed"
    note = f"{phase} aggregation {kind}: {type(exc).__name__}: {exc}"
    log(
        WARNING,
        "round %s: %s",
        server_round,
        note,
        exc_info=not isinstance(exc, InconsistentMessageReplies),
    )
    return note


def _rows(
    train: list[Message], evaluate: list[Message], archs: dict[int, str]
) -> list[dict[str, Any]]:
    """Per-client metrics of one round, merged from the train and evaluate replies."""
    rows: dict[int, dict[str, Any]] = {}
    for msg in [*train, *evaluate]:
        pid = -1 if msg.has_error() else partition_of(msg)
        if pid < 0:
            continue
        metrics = {k: v for k, v in dict(msg.content[P.METRICS]).items() if k != P.PARTITION_ID}
        metrics.pop(P.NUM_EXAMPLES, None)
        row = rows.setdefault(pid, {"client": pid, "architecture": archs.get(pid)})
        row.update(metrics)
    return list(rows.values())


def _arrays_to_numpy(arrays: ArrayRecord) -> dict[str, Any]:
    return {k: v.numpy() for k, v in arrays.items()}


def _arrays_from_numpy(state: dict[str, Any]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, Array(v)) for k, v in state.items()))


def run_experiment(
    grid: Grid,
    exp: Experiment,
    out_dir: str,
    progress: Progress | None = None,
    resume: bool = False,
    stopped: Callable[[], bool] = _never,
    plots: bool = True,
    directory: Directory | None = None,
) -> dict[str, Any]:
    """Run ``exp`` on the nodes of ``grid`` and write its results to ``out_dir``,
    checkpointing every round; ``resume`` continues from the directory's last checkpoint.
    ``directory``: where the engine can say which node holds which partition (Flower's
    simulation), nodes get the handshake when first sampled, so setup follows the
    clients used rather than those that exist; without it every node is asked first.
    ``stopped()`` true ends the run with :class:`RunStopped` before the next round (or
    while waiting for replies): in simulation the ServerApp runs in a thread of its own
    that would otherwise finish the remaining rounds after the driver was interrupted."""
    progress = progress or NullProgress()
    t_start = time.perf_counter()
    saved = load_server(out_dir) if resume else None
    writer = ResultsWriter(out_dir, exp, resume_round=saved["round"] if saved else 0, plots=plots)
    cfg = exp.config
    exporter = (
        MetricsExporter(cfg.monitoring, cfg.name) if cfg.monitoring.port is not None else None
    )
    try:
        return _rounds(grid, exp, writer, progress, exporter, t_start, saved, stopped, directory)
    finally:
        if exporter is not None:
            exporter.close()


def keeps_state_on_disk(cfg: ExperimentConfig, simulated: bool) -> bool:
    """Whether clients keep their model in their checkpoint file only. Yes for simulated
    nodes on one machine, which share its disk: otherwise the engine keeps every node's
    model in this process and ships it with each message. No on a Ray cluster, where a
    client may run on another machine each round (its state travels with it), nor for
    deployed nodes (each SuperNode holds its own state)."""
    return simulated and cfg.simulation.ray_address is None


def _rounds(
    grid: Grid,
    exp: Experiment,
    writer: ResultsWriter,
    progress: Progress,
    exporter: MetricsExporter | None,
    t_start: float,
    saved: dict[str, Any] | None,
    stopped: Callable[[], bool],
    directory: Directory | None,
) -> dict[str, Any]:
    cfg = exp.config
    first = saved["round"] + 1 if saved else 1
    checkpoints = str(checkpoint_dir(writer.dir).resolve() / "clients")
    known = directory(grid) if directory is not None else None
    if known is None:  # ask every node who it is (deployment)
        nodes, archs, kernels, setup_bytes = handshake(grid, cfg, checkpoints, first - 1)
        writer.clients_computed_on(kernels)
        configured = set(nodes)
    else:  # the engine knows who is who: configure each node when it is first sampled
        nodes, setup_bytes, configured = known, 0, set()
        archs = {pid: Learner.describe(exp, pid) for pid in nodes}  # what each would reply
    on_disk = keeps_state_on_disk(cfg, simulated=known is not None)
    lost: set[int] = set()  # configured partitions whose node has since lost its state
    strategy, arrays = build_strategy(exp, nodes)
    if saved:
        arrays = _arrays_from_numpy(saved["arrays"])
        strategy.load_state_dict(saved["strategy"])
        log(INFO, "resuming after round %d", saved["round"])
    log(INFO, "%s", strategy.summary())
    progress.start(cfg.rounds, len(nodes))
    tick = lambda _msg: progress.client_done()  # noqa: E731
    for server_round in range(first, cfg.rounds + 1):
        if stopped():
            raise RunStopped
        picked = sample_partitions(cfg, list(nodes), server_round)
        for group, resume_from in (
            ([p for p in picked if p not in configured and p not in lost], first - 1),
            ([p for p in picked if p in lost], server_round - 1),  # from its own checkpoint
        ):
            if group:
                got, _, kernels, nbytes = configure_nodes(
                    grid, cfg, [nodes[p] for p in group], checkpoints, resume_from, on_disk
                )
                writer.clients_computed_on(kernels)
                setup_bytes += nbytes
                configured |= {p for p, n in got.items() if nodes.get(p) == n}
                lost -= set(got)
        t_round = time.perf_counter()
        sampled = [nodes[p] for p in picked]
        ready = [nodes[p] for p in picked if p in configured]  # the others count as failed
        out = list(strategy.configure_train(server_round, arrays, NodeView(grid, ready)))
        progress.phase(server_round, "train", len(out))
        replies = _ordered(exchange(grid, out, cfg.round_timeout, tick, stopped))
        down, up = total_bytes(out), total_bytes(replies)
        note = ""
        report = RoundReport()
        valid = sum(1 for m in replies if not m.has_error())
        if valid < cfg.min_clients:
            # Too few survivors: no aggregation this round (the global model and targets stay).
            note = (
                f"skipped: {valid} of {len(out)} sampled clients replied, "
                f"min_clients is {cfg.min_clients}"
            )
            log(WARNING, "round %s: %s", server_round, note)
        else:
            try:
                new_arrays, report = strategy.aggregate_train(server_round, replies)
            except Exception as exc:  # noqa: BLE001 - a bad round must not lose the run
                new_arrays, note = None, _aggregation_failed("train", server_round, exc)
            if new_arrays is not None:
                arrays = new_arrays
        answered = [m.metadata.src_node_id for m in replies if not m.has_error()]
        ev_out: list[Message] = []
        ev_replies: list[Message] = []
        if valid >= cfg.min_clients:
            ev_out = list(
                strategy.configure_evaluate(server_round, arrays, NodeView(grid, answered))
            )
            progress.phase(server_round, "fine-tune + evaluate", len(ev_out))
            ev_replies = _ordered(exchange(grid, ev_out, cfg.round_timeout, tick, stopped))
            down += total_bytes(ev_out)
            up += total_bytes(ev_replies)
        restarted = _lost_state([*replies, *ev_replies], nodes)
        if restarted:
            log(
                WARNING,
                "round %d: client(s) %s lost their state (node restarted?): they get the "
                "experiment again when next sampled",
                server_round,
                ", ".join(map(str, sorted(restarted))),
            )
            configured -= restarted
            lost |= restarted
        failed = {m.metadata.src_node_id for m in [*replies, *ev_replies] if m.has_error()}
        failed |= set(sampled) - {m.metadata.src_node_id for m in replies}
        failed |= {m.metadata.dst_node_id for m in ev_out} - {
            m.metadata.src_node_id for m in ev_replies
        }
        # every sampled client either completed its part of the round or failed in it (never
        # configured, no train reply, an error, or no fine-tune/evaluate reply)
        failed &= set(sampled)
        record = RoundRecord(
            round=server_round,
            sampled=len(sampled),
            replied=len(sampled) - len(failed),
            failed=len(failed),
            rejected=len(report.rejected),
            rejected_reasons=dict(sorted(Counter(r.category for r in report.rejected).items())),
            skipped=report.skipped or bool(note),
            note=note,
            server=dict(report.metrics),
            bytes_up=up,
            bytes_down=down,
            wall_seconds=round(time.perf_counter() - t_round, 3),
        )
        rows = _rows(replies, ev_replies, archs)
        fusion = (
            None if report.fusion_weights is None else (report.participants, report.fusion_weights)
        )
        line = writer.add_round(record, rows, fusion)
        save_server(
            writer.dir,
            server_round,
            {"arrays": _arrays_to_numpy(arrays), "strategy": strategy.state_dict()},
        )
        progress.round_done(line)
        if exporter is not None:
            exporter.round_done(line, rows)
        log(
            INFO,
            "round %d: ALMA %s, %d clients, %.1fs",
            server_round,
            line.alma,
            line.participants,
            record.wall_seconds,
        )
    if stopped():
        raise RunStopped
    summary = writer.finish(
        time.perf_counter() - t_start,
        {
            "setup_bytes": setup_bytes,
            "configured_clients": len(configured),
            "architectures": [archs[p] for p in sorted(archs)],
        },
    )
    progress.finish(summary)
    return summary
