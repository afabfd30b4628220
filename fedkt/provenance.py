"""Which code produced a result, and on which kernels: a digest of fedkt's source, its
plugins and the versions of the libraries that compute the numbers, and the processor (or
GPU) features that decide which of those libraries' kernels ran.

A run's numbers are a function of its resolved config, of this code *and* of the kernels
the arithmetic ran on. Both are written into every ``summary.json`` so that a finished
run can be reused in place of an identical one (``fedkt compare --reuse``) only when it
would be computed again to the same bits: any edit to fedkt, a plugin, or a library
upgrade breaks the match, and so does a machine whose kernels round differently (an
11-row matrix product rounded differently on an AVX-512/AMX Xeon than on the machine a
test was written on; the same seed is the same numbers on one kind of machine only).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: The installed packages whose source decides a run's numbers.
PACKAGES = ("fedkt", "fedkt.clients", "fedkt.server", "fedkt.strategies")
#: Libraries whose version can change the numbers (kernels, RNG streams, Flower's sampling).
LIBRARIES = ("torch", "numpy", "scikit-learn", "flwr")
#: x86 features on which MKL, oneDNN and PyTorch's own CPU kernels choose their code paths
#: (vector width, fused multiply-add, low-precision dot products, AMX tiles).
KERNEL_FLAGS = (
    "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve",
)  # fmt: skip
#: Environment variables that make those libraries use other kernels than the machine's best.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
              "DNNL_MAX_CPU_ISA")  # fmt: skip


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


def run_provenance(plugins: tuple[str, ...], device: str) -> dict[str, str]:
    """What, besides its config, decides a run's numbers on this machine: the code that
    runs it (:func:`code_digest`) and the kernels it runs on (:func:`kernel_identity`) for
    its ``device`` setting. Written into every summary and matched by ``--reuse``."""
    return {"code": code_digest(plugins), "kernels": kernel_identity(run_device(device))}


def run_device(name: str) -> str:
    """The device type a run configured with ``device: name`` computes on here (``auto``:
    CUDA when this process sees a GPU). Unlike :func:`fedkt.training.resolve_device` it
    never raises: a ``cuda`` run asked about on a machine without a GPU is still a cuda
    run, just not one this machine can reproduce."""
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu() -> tuple[str, list[str]]:
    """(vendor and model, the :data:`KERNEL_FLAGS` present) from ``/proc/cpuinfo``;
    elsewhere (macOS, Windows) what ``platform`` knows. The model counts as well as the
    features: MKL picks other code paths for CPU generations with the same flags, and
    OpenBLAS its kernels per ARM core type."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return platform.processor() or "unknown", []
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first processor's
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    vendor = fields.get("vendor_id") or fields.get("cpu implementer") or "unknown"
    model = [  # x86: family and model; ARM: the core's part number; POWER, RISC-V: their names
        f"{name}={fields[key]}"
        for key, name in (
            ("cpu family", "family"), ("model", "model"), ("cpu part", "part"),
            ("cpu", "cpu"), ("uarch", "uarch"),
        )  # fmt: skip
        if fields.get(key)
    ]
    return " ".join([vendor, *model]), [f for f in KERNEL_FLAGS if f in flags]


@lru_cache(maxsize=None)
def kernel_identity(device: str = "cpu") -> str:
    """What decides which numeric kernels a run on ``device`` (``cpu`` or ``cuda``, see
    :func:`run_device`) executes on this machine: the architecture, the CPU's vendor and
    the features its libraries dispatch on, PyTorch's CPU capability, any environment
    variable that overrides them, and for CUDA the GPU and the CUDA and cuDNN versions.
    Two machines with the same identity run the same kernels; two with different ones may
    round differently, so their runs are not interchangeable. A run records the identity of
    the process that writes its summary and, where they differ from it, those its clients
    reported in their handshake (a deployment, a Ray cluster: ``ResultsWriter``)."""
    import torch

    vendor, flags = _cpu()
    parts = [platform.machine(), vendor, f"aten={torch.backends.cpu.get_cpu_capability()}"]
    parts += flags
    parts += [f"{k}={os.environ[k]}" for k in KERNEL_ENV if os.environ.get(k)]
    if device == "cuda":
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        cudnn = torch.backends.cudnn.version()
        parts += [f"gpu={gpu}", f"cuda={torch.version.cuda}", f"cudnn={cudnn}"]
    return " ".join(parts)
