"""A warm ClientApp process for a deployed SuperNode: every task in one interpreter.

Why: Flower 1.39's SuperNode turns each message it receives into a *task*, and its
SuperExec (``flower-superexec``) starts a fresh ``flwr-clientapp`` process for every task.
For fedkt that process imports torch, resolves the experiment and builds the client's data
again, several seconds per message, two or three messages per client per round: most of
a deployed round. Flower offers no mode that keeps that process (checked in 1.39: with
``--isolation subprocess`` and ``--isolation process`` alike one process serves one task
and exits; its warm executor pools are Kubernetes-only and not for ClientApps).

With ``--isolation process`` the SuperNode starts no SuperExec: it waits for one to
acquire its tasks over its local Runtime API. This module is that SuperExec, for
ClientApp tasks only, and runs each task in this process, with Flower's own task steps
(the same calls ``flwr-clientapp`` makes: pull the task input, install the FAB, load the
ClientApp, call it, push the reply, push the task's status). The ClientApp module and
what it caches per process (the resolved experiment, the client's data, one model per
architecture; see :mod:`fedkt.clients.app`) therefore survive from message to message
and from run to run. Results do not change: every draw is seeded by (seed, client,
round), as in the simulation, whose warm workers are the same code.

Which code runs: this worker is part of the fedkt installed on the node, so the ClientApp
it runs is always that installed fedkt, whatever app bundle (FAB) a run sends (each new
bundle is still installed, as Flower does, for its config), while a fresh ``flwr-clientapp``
would import the bundle's copy. Keep the node's install at the workstation's version (same
checkout + ``scripts/setup.sh``), or run cold (``WARM_CLIENTAPP=0``). (A task's app version
cannot be read before its message is taken: a second PullTaskInput with the same token is
refused by the SuperNode, so a task cannot be handed on once looked at.)

Started next to the SuperNode (``deploy/scripts/supernode.sh`` does both)::

    flower-supernode ... --isolation process --port 9094 &
    fedkt-clientapp-worker --runtime-api-address 127.0.0.1:9094 --parent-pid $!

The functions used from ``flwr.supernode.runtime.run_clientapp`` and
``flwr.supercore`` are internal to Flower; fedkt pins Flower 1.39 and
``tests/test_deploy.py`` runs a deployment through this worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedkt.clients.object_pulls import install as fast_object_pulls
from fedkt.errors import FedktError
from fedkt.polling import quiet_pause
from fedkt.protocol import MISSED_HANDSHAKE

logger = logging.getLogger("fedkt.warm_worker")

#: Why a task's message pull stopped (see :class:`_TaskClient`).
GAVE_UP = "the SuperNode gave this message up (its run ended)"

#: Polls for a task while the node is idle (Flower's SuperExec: every 1 s): right after a
#: task every ``POLL_FLOOR`` s, then a quarter of the idle time so far, at most every
#: ``POLL_CAP`` s (:func:`fedkt.polling.quiet_pause`). Each poll is an HTTP request to the
#: SuperNode costing both processes CPU: polling every 0.1 s, three workers and their
#: SuperNodes on 2 cores used ~25% more CPU, and rounds were slower (BENCHMARKS.md).
POLL_FLOOR = 0.02
POLL_CAP = 0.5
POLL_SHARE = 0.25


class _Stop(BaseException):
    """SIGTERM or SIGINT: leave the loop and exit cleanly (a BaseException, so that a
    task's ``except Exception`` does not report it as the ClientApp's failure)."""


def _client(address: str, component: str, token: str | None, certificates: bytes | None) -> Any:
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=certificates is None,
        root_certificates=certificates,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _task_heartbeat(client: Any, ended: threading.Event) -> Callable[[], bool]:
    """The task's heartbeat, as Flower's (``make_task_heartbeat_fn_http``) except what it
    does when the SuperNode answers that the task is over (its run was stopped or its
    ServerApp died, and the SuperNode gave up the message): Flower's raises SIGINT, which
    ends a one-task ``flwr-clientapp`` process but would end this worker and every later
    task of the node with it. Here it sets ``ended``, and the task stops waiting."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            response = client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False  # retried by the HeartbeatSender
        except httpx.HTTPStatusError as err:
            if err.response.status_code in (httpx.codes.SERVICE_UNAVAILABLE, 504):
                return False
            ended.set()  # e.g. the task's token is revoked: the task is over
            return True
        if not response.success:
            ended.set()
        return True

    return beat


class _TaskClient:
    """A task's Runtime API client whose object pulls give up once the message is lost.

    Why: the SuperNode hands a task out *before* it has pulled the message's objects from
    the SuperLink. If the run ends meanwhile (its ServerApp killed or stopped), the
    SuperNode drops the message (in Flower 1.39 without ending the task: its
    ``RunNotRunningException`` is a BaseException that skips the cleanup), and the
    objects stay "not yet available" to the task, whose pull waits for them up to two
    hours (``PULL_MAX_TIME``): every later message of the node would queue behind it.
    The message is lost when the SuperNode says the task is over (``ended``, from the
    heartbeat), or when the SuperNode has queued a newer task: it takes one message at a
    time, so it has given up on this one's objects (``superseded``)."""

    def __init__(self, client: Any, ended: threading.Event, superseded: Callable[[], bool]) -> None:
        self._client = client
        self._ended = ended
        self._superseded = superseded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def PullObject(self, request: Any) -> Any:  # noqa: N802 - Flower's RPC name
        from flwr.supercore.inflatable.inflatable_utils import ObjectPullError

        response = self._client.PullObject(request)
        if response.object_found and not response.object_available:
            if self._ended.is_set() or self._superseded():
                raise ObjectPullError(request.object_id, GAVE_UP)
        return response


def _newer_task_pending(acquire: Any, task: Any) -> Callable[[], bool]:
    """Whether the SuperNode has queued a task after ``task`` (see :class:`_TaskClient`)."""
    from flwr.proto.runtime_pb2 import PullPendingTasksRequest

    def check() -> bool:
        pending = acquire.PullPendingTasks(PullPendingTasksRequest()).tasks
        return any(t.task_id != task.task_id and t.pending_at >= task.pending_at for t in pending)

    return check


class WarmClientApps:
    """Runs ClientApp tasks of one SuperNode in this process."""

    def __init__(self, address: str, certificates: bytes | None = None) -> None:
        from flwr.clientapp.utils import get_load_client_app_fn

        self.address = address
        self.certificates = certificates
        self.load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        self.installed: set[str] = set()  # app bundles (FAB hashes) installed so far
        self.tasks = 0

    def run_task(self, token: str, superseded: Callable[[], bool] = lambda: False) -> None:
        """Run one task to its end (its reply, or Flower's error reply, and its status).
        ``superseded`` says whether the SuperNode has moved on to a newer message (then
        this one's objects are not coming: see :class:`_TaskClient`)."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.utils import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        client = _client(self.address, "flwr-clientapp", token, self.certificates)
        ended = threading.Event()  # the SuperNode says the task is over
        heartbeat = HeartbeatSender(_task_heartbeat(client, ended))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            message, context, run, fab = pull_task_input(_TaskClient(client, ended, superseded))
            if fab.hash_str not in self.installed:
                install_from_fab(fab.content, skip_prompt=True)
                self.installed.add(fab.hash_str)
            app = self.load(run.fab_id, run.fab_version, fab.hash_str)  # cached module
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # reported to the ServerApp as Flower's own process would
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(exc)}:<'{exc}'>"
            if isinstance(exc, LoadClientAppError):
                code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
                details = "An exception was raised when attempting to load `ClientApp`"
            if MISSED_HANDSHAKE in str(exc):  # an event the server handles
                logger.warning("ClientApp: %s", exc)
            elif message is None and GAVE_UP in str(exc):  # its run is over: nobody waits
                logger.warning("task given up: %s", exc)
            else:
                logger.exception("ClientApp raised an exception")
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                if heartbeat.is_running:
                    heartbeat.stop()  # before the token is revoked by the status push
                push_task_output(client=client, context=context, sub_status=status, details=details)
            except Exception as exc:  # noqa: BLE001 - the node's next tasks must still run
                if ended.is_set():
                    logger.warning("task ended by the SuperNode before its reply (%s)", exc)
                else:
                    logger.exception("pushing the task's reply or status failed")
            finally:
                if heartbeat.is_running:
                    heartbeat.stop()
                client.close()
        self.tasks += 1


def serve(
    address: str,
    certificates_path: str | None = None,
    parent_pid: int | None = None,
    max_tasks: int | None = None,
) -> int:
    """Acquire and run the SuperNode's ClientApp tasks until stopped (SIGTERM, SIGINT,
    the SuperNode exiting) or ``max_tasks`` have run. Returns the exit code."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    certificates = None
    if certificates_path is not None:
        try:
            with open(certificates_path, "rb") as fh:
                certificates = fh.read()
        except OSError as exc:
            print(
                f"fedkt-clientapp-worker: error: {certificates_path}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2

    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid is not None:
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(parent_pid)  # the SuperNode gone: SIGINT to us
    worker = WarmClientApps(address, certificates)
    acquire = _client(address, "SuperExec", None, certificates)
    logger.info("warm ClientApp worker %d serving %s", os.getpid(), address)
    idle_since = time.monotonic()
    try:
        while max_tasks is None or worker.tasks < max_tasks:
            res = acquire.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
            )
            if res.HasField("task") and res.token:
                started = time.perf_counter()
                worker.run_task(res.token, _newer_task_pending(acquire, res.task))
                logger.info(
                    "task %d done in %.2fs (worker %d, %d tasks)",
                    res.task.task_id,
                    time.perf_counter() - started,
                    os.getpid(),
                    worker.tasks,
                )
                idle_since = time.monotonic()
            else:
                idle = time.monotonic() - idle_since
                time.sleep(quiet_pause(idle, POLL_FLOOR, POLL_CAP, POLL_SHARE))
    except BaseException:
        # _Stop, or what the code it interrupted raised on its way out (e.g. "release
        # unlocked lock" from a Condition.wait in Flower's retry of a dead SuperNode)
        if not stopping.is_set():
            raise
        logger.info("warm ClientApp worker %d stopped after %d tasks", os.getpid(), worker.tasks)
    finally:
        acquire.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedkt-clientapp-worker",
        description="Run a SuperNode's ClientApp tasks in one warm process (start the "
        "SuperNode with --isolation process; see deploy/README.md).",
    )
    parser.add_argument(
        "--runtime-api-address",
        required=True,
        metavar="HOST:PORT",
        help="the SuperNode's Runtime API (its --host/--port; default 127.0.0.1:9094)",
    )
    parser.add_argument(
        "--root-certificates",
        metavar="PEM",
        help="CA certificate of a TLS Runtime API (default: plain HTTP on loopback)",
    )
    parser.add_argument(
        "--parent-pid", type=int, help="exit when this process (the SuperNode) exits"
    )
    args = parser.parse_args(argv)
    try:
        fast_object_pulls()  # a task's objects arrive after the task: clients/object_pulls.py
    except FedktError as exc:
        print(f"fedkt-clientapp-worker: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Runtime API request
    return serve(args.runtime_api_address, args.root_certificates, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
