"""Ray's serialization add-ons, registered only for libraries a process has imported.

When a Ray process first serialises anything, Ray's ``serialization_addons.apply``
registers custom serialisers for three libraries whenever they are *installed*: it
imports pyarrow (with ``pyarrow.json``), ``pydantic.v1`` and starlette to do so. fedkt
installs pyarrow (Hugging Face ``datasets`` needs it, for the partitioners that run in a
process of their own: :mod:`fedkt.data.layout`) but sends no Arrow, pydantic v1 or
starlette object through Ray, so the driver and every worker held those imports for
nothing: 47 MiB more per process after ``import pyarrow`` alone (USS, measured on top of
torch, Ray and Flower), in the driver and each worker of a simulation.

:func:`install` wraps ``apply`` so that each add-on is registered where its library is
already imported when the process's serialisation context is made (then an object of it
may exist here and be sent), and skipped otherwise. A library imported later in the
process is serialised as Ray does without the add-on (Arrow tables by pickle, which works;
pydantic v1 fields and starlette's ``State`` do not pickle). Installed by the module that
defines the clients' actor (:mod:`fedkt.server.client_actor`), which a Ray worker imports
when it loads the actor class, before it deserialises the actor's arguments (and so before
its serialisation context exists), and by the driver before it starts Ray.
"""

from __future__ import annotations

import inspect
import sys
import threading
from typing import Any

_lock = threading.Lock()
#: The wrapper's marker: set on the function :func:`install` puts in Ray's place.
_MARK = "_fedkt_imported_only"
#: What Ray's ``apply`` calls (Ray 2.55): pydantic v1's, starlette's and Arrow's add-ons.
_ADD_ONS = {
    "register_pydantic_serializers",
    "register_starlette_serializer",
    "_register_custom_datasets_serializers",
}


def _imported(*names: str) -> bool:
    return any(name in sys.modules for name in names)


def install() -> bool:
    """Wrap Ray's ``serialization_addons.apply`` in this process (idempotent); True when
    active, False for a Ray whose add-ons are not the ones written against (left alone)."""
    from ray.util import serialization_addons

    with _lock:
        original = serialization_addons.apply
        if getattr(original, _MARK, False):
            return True
        try:
            # exactly the three add-ons written against: a Ray with another one is left
            # alone rather than losing it
            params = tuple(inspect.signature(original).parameters)
            registers = {n for n in original.__code__.co_names if "register" in n}
            known = params == ("serialization_context",) and registers == _ADD_ONS
        except (TypeError, ValueError, AttributeError):
            known = False
        if not known:
            return False

        def apply(serialization_context: Any) -> None:
            if _pydantic_v1_imported():
                from ray._common.pydantic_compat import register_pydantic_serializers

                register_pydantic_serializers(serialization_context)
            if _imported("starlette"):
                serialization_addons.register_starlette_serializer(serialization_context)
            if _imported("pyarrow") and sys.platform != "win32":
                from ray._private.arrow_serialization import (
                    _register_custom_datasets_serializers,
                )

                _register_custom_datasets_serializers(serialization_context)

        setattr(apply, _MARK, True)
        apply.__doc__ = "Ray's add-ons for the libraries imported here (fedkt.server.ray_addons)."
        serialization_addons.apply = apply
        return True


def _pydantic_v1_imported() -> bool:
    """pydantic v1's classes exist here: ``pydantic.v1`` is imported, or pydantic is 1.x."""
    if _imported("pydantic.v1"):
        return True
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and str(getattr(pydantic, "VERSION", "")).startswith("1.")
