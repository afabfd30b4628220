"""Which code produced a result: a digest of fedkt's source, its plugins and the versions
of the libraries that compute the numbers.

A run's numbers are a function of its resolved config *and* of this code. The digest is
written into every ``summary.json`` so that a finished run can be reused in place of an
identical one (``fedkt compare --reuse``) only when the code that made it is the code
that would make it again; any edit to fedkt, a plugin, or a library upgrade breaks the
match instead of silently mixing results of two protocols.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: The installed packages whose source decides a run's numbers.
PACKAGES = ("fedkt", "fedkt.clients", "fedkt.server", "fedkt.strategies")
#: Libraries whose version can change the numbers (kernels, RNG streams, Flower's sampling).
LIBRARIES = ("torch", "numpy", "scikit-learn", "flwr")


def _sources(module: str) -> list[tuple[str, Path]]:
    """(name relative to the module, path) of each source file of ``module``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package: every .py file below it
        return sorted(
            (p.relative_to(root).as_posix(), p)
            for root in map(Path, spec.submodule_search_locations)
            for p in root.rglob("*.py")
        )
    return [(Path(spec.origin).name, Path(spec.origin))] if spec.origin else []


@lru_cache(maxsize=None)
def code_digest(plugins: tuple[str, ...] = ()) -> str:
    """sha256 over the source files of fedkt and ``plugins`` (names and contents) and the
    versions of :data:`LIBRARIES`."""
    h = hashlib.sha256()
    for module in (*PACKAGES, *plugins):
        for name, path in _sources(module):
            h.update(f"{module}:{name}\0".encode())
            h.update(path.read_bytes())
    for lib in LIBRARIES:
        try:
            version = metadata.version(lib)
        except metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{lib}=={version}\0".encode())
    return h.hexdigest()
