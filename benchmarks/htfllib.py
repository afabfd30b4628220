"""fedkt beside HtFLlib (the heterogeneous-model FL library) on one partition: wall time,
CPU seconds and peak memory of each process tree, and final accuracy, per method.

    python -m benchmarks.htfllib --htfllib ~/src/HtFLlib               # MNIST, 20 clients,
                                                        # Dirichlet 0.1, 20 rounds, 1 epoch
    python -m benchmarks.htfllib --htfllib ~/src/HtFLlib --methods fd --rounds 2   # a quick look
    python -m benchmarks.htfllib --htfllib ~/src/HtFLlib \
        --fedkt-set simulation.num_cpus_per_client=2     # fedkt with one worker, both cores

The user's HtFLlib checkout is run as it is (never vendored): fedkt derives the partition
(its Dirichlet split of MNIST, each client's test split drawn with its label mix), writes
every client's normalised train and test tensors in HtFLlib's file layout
(``dataset/<name>/{train,test}/<client>.npz``), and both libraries train fedkt's model
(``--model``, default ``cnn-fedavg``: HtFLlib swaps its head for an identical linear one)
with the same batch size, learning rate (plain SGD), local epochs and batching (a short
final batch skipped: ``train.drop_last``, HtFLlib's ``DataLoader(drop_last=True)``),
scored on the same test samples. HtFLlib runs through ``benchmarks/htfllib_runner.py``
(its ``main.py`` has no 1-channel model family; the runner reads main.py's flags from the
checkout).

Not identical, by design of each library (say so when quoting the figures): fedkt runs
its own round protocol (a knowledge strategy's exchange phase, an evaluation of the
global test subset, checkpoints) through Flower's simulation engine with one process per
core; HtFLlib runs every client in one process, and its loop trains one round more than
it evaluates (R + 1 passes for R rounds), and it does not shuffle a client's rows (the
same batches every round; fedkt draws a new order each pass). The methods' details differ
too (HtFLlib's FD regularises local training towards per-class mean logits; FedProto is
scored by nearest prototype there, by its classifier in fedkt). ``fedproto_local`` trains
as HtFLlib's FedProto does, in one pass; fedkt's ``fedproto`` adds an exchange phase (a
second pass over private data); both are compared with the same HtFLlib run.

HtFLlib needs ``h5py`` and ``scikit-learn`` in the interpreter that runs it (``--python``,
default this one); where ``torchvision`` is missing (it is imported but not used on this
path) a stub package is put on its path; torch >= 2.6 needs
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for HtFLlib's own checkpoints, set for its process
only (it loads files it wrote itself in the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import GIB, PeakMemory, command, config, fail, print_table
from fedkt.errors import FedktError, one_line

#: fedkt strategy -> HtFLlib algorithm. ``fedproto_local`` is FedProto as HtFLlib (and the
#: paper) trains it, one pass; ``fedproto`` is fedkt's two-phase form (a second pass).
METHODS = {
    "local": "Local",
    "fd": "FD",
    "fd_local": "FD",
    "fedproto": "FedProto",
    "fedproto_local": "FedProto",
}
RUNNER = Path(__file__).with_name("htfllib_runner.py")
DATA_NAME = "fedkt_partition"


def overrides(args: argparse.Namespace, method: str) -> list[str]:
    return [
        f"dataset={args.dataset}",
        f"num_clients={args.clients}",
        f"rounds={args.rounds}",
        f"seed={args.seed}",
        f"strategy={method}",
        "partition.name=dirichlet",
        f"partition.alpha={args.alpha}",
        f"partition.samples_per_client={args.samples_per_client or 'null'}",
        f"transfer.size={args.transfer_size}",
        f"evaluation.client_test_size={args.client_test_size}",
        f"evaluation.global_test_size={args.global_test_size}",
        f"model.name={args.model}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        "train.momentum=0",
        "train.drop_last=true",  # HtFLlib's DataLoader(drop_last=True)
        *args.fedkt_set,
    ]


def write_partition(args: argparse.Namespace, root: Path) -> tuple[tuple[int, ...], int, int]:
    """fedkt's layout, as HtFLlib's files under ``root/dataset/DATA_NAME``; returns the
    input shape, the number of classes and the model's embedding size."""
    from fedkt.data.federation import federation_for
    from fedkt.models import embedding_dim

    fed = federation_for(config(None, overrides(args, "local")))
    for split in ("train", "test"):
        (root / "dataset" / DATA_NAME / split).mkdir(parents=True, exist_ok=True)
    for i in range(args.clients):
        data = fed.client_data(i)
        splits = (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y))
        for split, x, y in splits:
            with open(root / "dataset" / DATA_NAME / split / f"{i}.npz", "wb") as fh:
                # HtFLlib's format: one entry "data", a dict of x (float32) and y (int64).
                np.savez_compressed(fh, data={"x": x.numpy().astype(np.float32),
                                              "y": y.numpy().astype(np.int64)})  # fmt: skip
    (root / "system").mkdir(exist_ok=True)
    dim = embedding_dim(args.model, fed.input_shape, fed.num_classes)
    return fed.input_shape, fed.num_classes, dim


def _check_python(python: str, work: Path) -> list[str]:
    """PYTHONPATH entries HtFLlib's interpreter needs beyond its checkout (a torchvision
    stub where torchvision is missing); a missing requirement is one line."""
    probe = (
        "import importlib.util as u, json; print(json.dumps([m for m in %r if not u.find_spec(m)]))"
    )
    needed = ("torch", "fedkt", "torchvision")  # (HtFLlib's own: its import error is shown)
    # asked from the work folder, where HtFLlib runs: from this repository's root, its own
    # fedkt/ folder would be found on the interpreter's path and the check would pass
    out = subprocess.run(
        [python, "-c", probe % (needed,)], capture_output=True, text=True, cwd=work
    )
    if out.returncode:
        raise FedktError(f"--python: {python} does not run ({out.stderr.strip()[-200:]})")
    missing = json.loads(out.stdout.strip().splitlines()[-1])
    if hard := [m for m in missing if m != "torchvision"]:
        raise FedktError(
            f"--python: {python} lacks {', '.join(hard)} (the runner builds fedkt's model "
            "there): install fedkt in that environment"
        )
    if "torchvision" not in missing:
        return []
    stub = work / "stubs" / "torchvision"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text(
        '"""Stand-in: HtFLlib imports torchvision; FD, FedProto and Local use none of it."""\n'
        "from . import models, transforms  # noqa: F401\n"
    )
    (stub / "models.py").write_text("")
    (stub / "transforms.py").write_text("")
    return [str(work / "stubs")]


def _measure(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        with PeakMemory(proc.pid) as mem:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code:
        tail = log.read_text().strip().splitlines()[-3:]
        raise FedktError(f"{cmd[1]} exited with {code} (log {log}): {' | '.join(tail)}")
    return {"wall": wall, "cpu": mem.cpu_seconds, "peak": mem.peak, "at_peak": mem.composition()}


def run_fedkt(args: argparse.Namespace, method: str, work: Path) -> dict:
    out = work / f"fedkt-{method}"
    cmd = [sys.executable, "-m", "fedkt.server.cli", "run", "--quiet", "--out", str(out)]
    cmd += [a for o in overrides(args, method) for a in ("--set", o)]
    got = _measure(cmd, work, dict(os.environ), work / f"fedkt-{method}.log")
    got["accuracy"] = json.loads((out / "summary.json").read_text())["alma"]
    return got


def run_htfllib(
    args: argparse.Namespace, method: str, work: Path, shape: tuple[int, ...], classes: int,
    dim: int, paths: list[str],
) -> dict:  # fmt: skip
    algo = METHODS[method]
    flags = ["-data", DATA_NAME, "-algo", algo, "-go", f"fedkt-{method}", "-dev", "cpu",
             "-nc", str(args.clients), "-ncl", str(classes), "-gr", str(args.rounds),
             "-ls", str(args.epochs), "-lbs", str(args.batch_size), "-lr", str(args.lr),
             "-fd", str(dim), "-jr", "1"]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(args.htfllib).resolve() / "system"), *paths])
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # HtFLlib's own checkpoints, this process
    result = work / f"htfllib-{method}.json"
    cmd = [args.python, str(RUNNER), str(args.htfllib), args.model,
           ",".join(map(str, shape)), str(result), *flags]  # fmt: skip
    got = _measure(cmd, work / "system", env, work / f"htfllib-{method}.log")
    got["accuracy"] = json.loads(result.read_text())["accuracy"][-1]
    return got


def _rows(method: str, got: dict[str, dict]) -> list[list[str]]:
    """Two table rows (fedkt, HtFLlib); a library that failed shows "failed"."""
    ours, theirs = got.get("fedkt"), got.get("HtFLlib")
    rows = []
    for library, r in (("fedkt", ours), ("HtFLlib", theirs)):
        if r is None:
            rows.append([method, library, "failed", "", "", "", "", ""])
            continue
        ratios = (
            [f"{r['cpu'] / theirs['cpu']:.2f}", f"{r['peak'] / theirs['peak']:.2f}"]
            if library == "fedkt" and theirs
            else ["", ""]
        )
        rows.append([method, library, f"{r['wall']:.1f}", f"{r['cpu']:.1f}",
                     f"{r['peak'] / GIB:.2f}", f"{100 * r['accuracy']:.1f}", *ratios])  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks.htfllib", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--htfllib", required=True, help="path of an HtFLlib checkout")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--python", default=sys.executable, help="interpreter for HtFLlib")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--model", default="cnn-fedavg")
    parser.add_argument("--samples-per-client", type=int, default=None)
    parser.add_argument("--transfer-size", type=int, default=1000)
    parser.add_argument("--client-test-size", type=int, default=500)
    parser.add_argument("--global-test-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fedkt-set", action="append", default=[], metavar="KEY=VALUE",
        help="an extra fedkt config override for fedkt's runs (repeatable), e.g. "
        "simulation.num_cpus_per_client=2: one worker using both cores, as HtFLlib's process",
    )  # fmt: skip
    parser.add_argument(
        "--work", help="folder for the partition, logs and results (default: temporary)"
    )
    args = parser.parse_args(argv)
    htfl = Path(args.htfllib).expanduser()
    if not (htfl / "system" / "main.py").is_file():
        parser.error(f"--htfllib: {htfl} is not an HtFLlib checkout (no system/main.py)")
    args.htfllib = str(htfl.resolve())
    with tempfile.TemporaryDirectory(prefix="fedkt-htfllib-") as tmp:
        work = Path(args.work).resolve() if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            paths = _check_python(args.python, work)
            shape, classes, dim = write_partition(args, work)
            rows = []
            theirs: dict[str, dict] = {}  # HtFLlib's results by algorithm: each runs once
            for method in args.methods:
                got = {}
                for library in ("fedkt", "HtFLlib"):
                    try:
                        if library == "fedkt":
                            got[library] = run_fedkt(args, method, work)
                        elif METHODS[method] in theirs:
                            got[library] = theirs[METHODS[method]]
                        else:
                            got[library] = theirs[METHODS[method]] = run_htfllib(
                                args, method, work, shape, classes, dim, paths
                            )
                    except FedktError as exc:  # one library's failure is a row, not the end
                        print(one_line(f"benchmarks.htfllib: {method}: {library}: {exc}"),
                              file=sys.stderr)  # fmt: skip
                rows += _rows(method, got)
                for row in rows[-2:]:  # as each method finishes: a stopped run keeps them
                    print("  ".join(row), flush=True)
                for library, r in got.items():  # where each peak went, per process (GiB)
                    print(f"  {method} {library} peak: {r['at_peak']}", flush=True)
        except FedktError as exc:
            return fail("benchmarks.htfllib", exc)
        print_table(
            f"fedkt vs HtFLlib: {args.dataset}, {args.clients} clients, Dirichlet {args.alpha}, "
            f"{args.rounds} rounds, {args.epochs} local epoch(s), {args.model}",
            [
                "method",
                "library",
                "wall s",
                "CPU s",
                "peak GiB",
                "final acc %",
                "CPU fedkt/HtFLlib",
                "peak fedkt/HtFLlib",
            ],
            rows,
        )
    return 0


if __name__ == "__main__":
    command(main, "benchmarks.htfllib")
