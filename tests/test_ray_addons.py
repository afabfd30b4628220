"""Ray's serialization add-ons are registered only for libraries a process has imported:
a process that uses no pyarrow or starlette does not import them when Ray serialises
(47 MiB more per simulation worker after ``import pyarrow``), and one that has imported
pyarrow still gets Ray's Arrow serialisers."""

import json
import subprocess
import sys

from fedkt.server import ray_addons

_PROBE = """
import json, sys
from fedkt.server import ray_addons
{before}
assert ray_addons.install()

class Context:  # records what Ray's add-ons register on a serialisation context
    def __init__(self):
        self.registered = []

    def _register_cloudpickle_serializer(self, cls, custom_serializer, custom_deserializer):
        self.registered.append(f"{{cls.__module__}}.{{cls.__qualname__}}")

    def _register_cloudpickle_reducer(self, cls, reducer):
        self.registered.append(f"{{cls.__module__}}.{{cls.__qualname__}}")

from ray.util import serialization_addons

context = Context()
serialization_addons.apply(context)
print(json.dumps({{
    "imported": [m for m in ("pyarrow", "starlette") if m in sys.modules],
    "registered": context.registered,
}}))
"""


def _probe(before: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(before=before)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_process_without_pyarrow_or_starlette_does_not_import_them_for_ray():
    got = _probe()
    assert got["imported"] == []
    assert not any(r.startswith(("pyarrow", "starlette")) for r in got["registered"])


def test_a_process_that_imported_pyarrow_gets_rays_arrow_serialisers():
    got = _probe("import pyarrow")
    assert "pyarrow" in got["imported"]
    assert any(r.startswith("pyarrow") for r in got["registered"])


def test_install_is_idempotent_and_leaves_another_rays_add_ons_alone(monkeypatch):
    from ray.util import serialization_addons

    def apply(context, extra):  # not the shape written against
        pass

    def register_another_serializer(context):
        pass

    def apply_more(serialization_context):  # the right shape, but one add-on more
        register_another_serializer(serialization_context)

    for other in (apply, apply_more):
        monkeypatch.setattr(serialization_addons, "apply", other)
        assert not ray_addons.install()
        assert serialization_addons.apply is other
    monkeypatch.undo()
    assert ray_addons.install() and ray_addons.install()
    assert getattr(serialization_addons.apply, ray_addons._MARK)
