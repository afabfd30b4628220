"""The warm ClientApp worker's guards for a task the SuperNode has ended (its run stopped
or its ServerApp died while the message's objects were still on their way), with fake
Runtime API answers and Flower's own object-pull loop: the worker must give the task up
within a heartbeat and stay alive for the node's next tasks."""

import signal
import threading
import time

import httpx
import pytest
from flwr.proto.message_pb2 import PullObjectResponse
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import PullPendingTasksResponse, SendTaskHeartbeatResponse
from flwr.proto.task_pb2 import Task
from flwr.supercore.inflatable.inflatable_protobuf_utils import make_pull_object_fn_protobuf
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    ObjectUnavailableError,
    pull_objects,
)

from fedkt.clients.warm_worker import _newer_task_pending, _task_heartbeat, _TaskClient


class _Runtime:
    """A SuperNode's Runtime API as a task sees it once the SuperNode has dropped the
    message: the objects are never available, the heartbeat is refused."""

    def __init__(self, heartbeat_error: int | None = None) -> None:
        self.pulls = 0
        self.heartbeat_error = heartbeat_error

    def PullObject(self, request):  # noqa: N802 - Flower's RPC name
        self.pulls += 1
        return PullObjectResponse(object_found=True, object_available=False)

    def SendTaskHeartbeat(self, request):  # noqa: N802
        if self.heartbeat_error is not None:
            response = httpx.Response(self.heartbeat_error, request=httpx.Request("POST", "x"))
            raise httpx.HTTPStatusError("refused", request=response.request, response=response)
        return SendTaskHeartbeatResponse(success=False)


@pytest.fixture
def no_sigint():
    """Flower's own task heartbeat raises SIGINT here, which would end the worker."""
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *a: seen.append(a))
    yield seen
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("refusal", [None, 401])
def test_a_refused_heartbeat_ends_the_task_not_the_worker(no_sigint, refusal):
    ended = threading.Event()
    beat = _task_heartbeat(_Runtime(refusal), ended)
    assert beat() is True  # answered: not a transport failure to retry
    assert ended.is_set() and no_sigint == []


def test_transport_failures_are_retried_and_do_not_end_the_task():
    class Down(_Runtime):
        def SendTaskHeartbeat(self, request):  # noqa: N802
            raise httpx.ConnectError("refused")

    ended = threading.Event()
    assert _task_heartbeat(Down(), ended)() is False and not ended.is_set()


def _pull(runtime, ended, superseded=lambda: False):
    task_client = _TaskClient(runtime, ended, superseded)
    return make_pull_object_fn_protobuf(task_client.PullObject, Node(node_id=1), 7)


def test_an_ended_task_stops_waiting_for_objects_that_will_never_come():
    runtime, ended = _Runtime(), threading.Event()
    threading.Timer(0.3, ended.set).start()  # the next heartbeat says the task is over
    started = time.monotonic()
    with pytest.raises(ObjectPullError, match="gave this message up"):
        pull_objects(["a" * 64], _pull(runtime, ended))  # Flower's loop: up to 2 h by default
    assert time.monotonic() - started < 5 and runtime.pulls >= 1
    # other calls go to the task's client unchanged
    assert _TaskClient(runtime, ended, bool).SendTaskHeartbeat.__self__ is runtime


def _task(task_id: int, pending_at: str) -> Task:
    return Task(task_id=task_id, pending_at=pending_at)


class _Executor:
    """The SuperExec side of the Runtime API: the tasks the SuperNode has queued."""

    def __init__(self, *pending: Task) -> None:
        self.pending = list(pending)

    def PullPendingTasks(self, request):  # noqa: N802
        return PullPendingTasksResponse(tasks=self.pending)


def test_a_newer_task_means_the_supernode_dropped_this_message():
    """Flower 1.39's SuperNode drops a message whose run ended while its objects were on
    their way without ending the task; it takes one message at a time, so a newer
    pending task says this one's objects will never come."""
    ours = _task(1, "2026-11-29T22:59:09.100000+00:00")
    newer = _task(2, "2026-11-29T22:59:38.400000+00:00")
    runtime, ended = _Runtime(), threading.Event()
    superseded = _newer_task_pending(_Executor(newer), ours)
    with pytest.raises(ObjectPullError, match="gave this message up"):
        _pull(runtime, ended, superseded)("a" * 64)
    # alone in the queue (or only older tasks there): keep waiting, Flower retries
    for executor in (_Executor(), _Executor(_task(3, "2026-11-29T22:58:00.000000+00:00"))):
        with pytest.raises(ObjectUnavailableError):
            _pull(runtime, ended, _newer_task_pending(executor, ours))("a" * 64)
