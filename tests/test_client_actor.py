"""The pool's actor: Flower's behaviour, without importing ``flwr.simulation`` in workers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException, LoadClientAppError

from fedkt.server.client_actor import ClientRunner

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower builds messages inside a task


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def _message() -> Message:
    content = RecordDict({"config": ConfigRecord({"x": 2})})
    return Message(content, dst_node_id=7, message_type=MessageType.QUERY)


def _app(reply_x: int | None = None, fail: Exception | None = None) -> ClientApp:
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if fail is not None:
            raise fail
        context.state["seen"] = ConfigRecord({"x": msg.content["config"]["x"]})
        return Message(RecordDict({"config": ConfigRecord({"x": reply_x})}), reply_to=msg)

    return app


def test_runs_the_client_app_and_returns_cid_reply_and_context() -> None:
    cid, reply, context = ClientRunner().run(lambda: _app(reply_x=5), _message(), "3", _context())
    assert cid == "3"
    assert reply.content["config"]["x"] == 5
    assert context.state["seen"]["x"] == 2  # the handler's state change comes back


def test_a_failing_client_is_flowers_client_app_exception() -> None:
    """Flower's backend recognises a client failure by this exception type."""
    with pytest.raises(ClientAppException, match="boom"):
        ClientRunner().run(lambda: _app(fail=RuntimeError("boom")), _message(), "3", _context())


def test_an_app_that_cannot_load_is_passed_through() -> None:
    def load() -> ClientApp:
        raise LoadClientAppError("no such app")

    with pytest.raises(LoadClientAppError):
        ClientRunner().run(load, _message(), "3", _context())


def test_on_actor_init_fn_runs_once_at_start() -> None:
    calls: list[int] = []
    ClientRunner(on_actor_init_fn=lambda: calls.append(1))
    assert calls == [1]


def test_a_worker_does_not_import_flower_simulation() -> None:
    """What a worker imports to run clients: the actor's module and fedkt's ClientApp.
    ``flwr.simulation`` (Flower's CLI, SQLAlchemy, FastAPI, ...) must not come with them."""
    probe = (
        "import sys, fedkt.server.client_actor, fedkt.clients.app; "
        "print(sorted(m for m in ('flwr.simulation', 'sqlalchemy', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
