"""The Ray actor that runs simulated clients, without importing ``flwr.simulation``.

Flower's ``ClientAppActor`` lives in ``flwr.simulation.ray_transport.ray_actor``, and
importing it runs the ``flwr.simulation`` package's ``__init__``: Flower's simulation
command line, the SuperLink state (SQLAlchemy, Alembic), FastAPI, requests, ... A client
uses none of it, yet every worker process imported it when it unpickled the actor class:
47 MiB more per worker (USS after the import, on top of torch, Ray and ``flwr.app``),
which with fedkt's two default workers was most of what kept a 20-client run above
1.5 GiB. :class:`ClientActor` does what Flower's actor does, in the same few lines: run
the ClientApp that ``client_app_fn`` returns on the message, and wrap a failure in
Flower's ``ClientAppException`` so that Flower's backend reports it as before. It
imports only ``flwr.app`` and ``flwr.clientapp``, which a client needs anyway. The actor
pool, the message routing and the rest of the engine stay Flower's (see
:mod:`fedkt.server.shared_engine`, which builds the pool with this class).
"""

from __future__ import annotations

from collections.abc import Callable

import ray
from flwr.app import Context, Message
from flwr.clientapp.client_app import ClientApp, ClientAppException, LoadClientAppError

from fedkt.server import ray_addons

# A worker imports this module when it loads the actor class, before its serialisation
# context exists: Ray's add-ons then import pyarrow, pydantic v1 and starlette only where
# they are in use (see fedkt.server.ray_addons).
ray_addons.install()


class ClientRunner:
    """What a pool actor does: one client's message at a time (one actor per client slot
    of the pool). A plain class, so that it can be tested without Ray."""

    def __init__(self, on_actor_init_fn: Callable[[], None] | None = None) -> None:
        if on_actor_init_fn is not None:
            on_actor_init_fn()

    def run(
        self,
        client_app_fn: Callable[[], ClientApp],
        message: Message,
        cid: str,
        context: Context,
    ) -> tuple[str, Message, Context]:
        """The reply of the ClientApp to ``message`` (with ``cid`` and the updated context,
        as Flower's backend expects them)."""
        try:
            app = client_app_fn()
            out = app(message=message, context=context)
        except LoadClientAppError:
            raise
        except Exception as exc:
            raise ClientAppException(str(exc)) from exc
        return cid, out, context

    def terminate(self) -> None:
        """Leave the pool (Flower's pool calls this when it shuts down)."""
        ray.actor.exit_actor()


#: The actor class the pool is built with.
ClientActor = ray.remote(ClientRunner)
