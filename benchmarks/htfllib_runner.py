"""Runs one algorithm of a user's HtFLlib checkout on a partition benchmarks.htfllib wrote,
with fedkt's model: executed by that benchmark in a subprocess (working directory
``<work>/system``, HtFLlib's ``system/`` on ``PYTHONPATH``), never imported by fedkt.

    python benchmarks/htfllib_runner.py HTFLLIB MODEL C,H,W RESULT.json -algo FD -data NAME ...

HtFLlib's ``main.py`` picks models by family name from a fixed list, none of which takes
1-channel images, and reads its flags in its ``__main__`` block. So this runner builds
main.py's own argument parser from the checkout (the ``parser`` statements of that block,
so flag names and defaults are the checkout's), gives every client fedkt's ``MODEL``
(HtFLlib's ``BaseHeadSplit`` then replaces the model's ``head`` with its own linear head
on the embedding, the same architecture), and runs the algorithm's server class as
main.py does. RESULT.json gets the accuracy after each round (entry k: after k rounds).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from pathlib import Path

#: HtFLlib algorithm name -> (module, class), as main.py dispatches them.
SERVERS = {
    "Local": ("flcore.servers.serverlocal", "Local"),
    "FD": ("flcore.servers.serverfd", "FD"),
    "FedProto": ("flcore.servers.serverproto", "FedProto"),
}


def _is_main_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _builds_parser(node: ast.stmt) -> bool:
    """``parser = argparse.ArgumentParser(...)`` or ``parser.add_argument(...)``."""
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "parser" for t in node.targets) and (
            "ArgumentParser" in ast.unparse(node.value)
        )
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr == "add_argument"
            and isinstance(func.value, ast.Name)
            and func.value.id == "parser"
        )
    return False


def htfllib_parser(main_py: Path) -> argparse.ArgumentParser:
    """main.py's argument parser, from its source."""
    tree = ast.parse(main_py.read_text(), str(main_py))
    block = next((n for n in tree.body if _is_main_block(n)), None)
    if block is None:
        raise SystemExit(f"htfllib: {main_py} has no __main__ block to read its flags from")
    stmts = [n for n in block.body if _builds_parser(n)]  # type: ignore[attr-defined]
    namespace: dict[str, object] = {"argparse": argparse}
    exec(compile(ast.Module(body=stmts, type_ignores=[]), str(main_py), "exec"), namespace)
    parser = namespace.get("parser")
    if not isinstance(parser, argparse.ArgumentParser):
        raise SystemExit(f"htfllib: no argument parser found in {main_py}")
    return parser


def main(argv: list[str]) -> None:
    htfl, model, shape, result, *flags = argv
    system = Path(htfl).resolve() / "system"
    args = htfllib_parser(system / "main.py").parse_args(flags)
    if args.algorithm not in SERVERS:
        raise SystemExit(f"htfllib: algorithm {args.algorithm!r} not one of {sorted(SERVERS)}")

    import torch

    from fedkt.models import build_model

    torch.manual_seed(0)  # as main.py does at import
    models = importlib.import_module("flcore.trainmodel.models")
    input_shape = tuple(int(v) for v in shape.split(","))
    models.fedkt_model = lambda: build_model(model, input_shape, args.num_classes)  # type: ignore[attr-defined]
    args.models = ["fedkt_model()"]
    module, cls = SERVERS[args.algorithm]
    server = getattr(importlib.import_module(module), cls)(args, 0)
    server.train()
    Path(result).write_text(json.dumps({"accuracy": [float(a) for a in server.rs_test_acc]}))


if __name__ == "__main__":
    main(sys.argv[1:])
