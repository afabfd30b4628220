"""The layout cache: a layout loaded from it equals the one derived, a damaged, foreign or
code-carrying file is ignored (never trusted), and a changed config never reads a stale one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fedkt.config import load_config
from fedkt.data import federation as fed_mod
from fedkt.data import layout as layout_mod
from fedkt.data import layout_cache
from fedkt.errors import ConfigError

SMALL = ["num_clients=6", "transfer.size=50", "evaluation.client_test_size=30"]


def _arrays(fed) -> list[np.ndarray]:
    return [fed.transfer_idx, *fed.client_idx, *fed.client_test_idx, fed.global_test_idx]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b), strict=True))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", str(tmp_path / "layouts"))
    return tmp_path / "layouts"


def _no_derivation(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the layout was derived, not loaded")

    monkeypatch.setattr(layout_mod, "derive_layout", refuse)


def test_a_cached_layout_equals_the_derived_one_and_skips_the_derivation(cache, monkeypatch):
    cfg = load_config(None, SMALL)
    derived = fed_mod.build_federation(cfg)
    assert len(list(cache.glob("*.npz"))) == 1
    _no_derivation(monkeypatch)
    assert _same(fed_mod.build_federation(cfg), derived)


def test_another_config_or_seed_gets_its_own_layout(cache):
    a = fed_mod.build_federation(load_config(None, SMALL))
    b = fed_mod.build_federation(load_config(None, [*SMALL, "seed=1"]))
    c = fed_mod.build_federation(load_config(None, [*SMALL, "partition.alpha=5"]))
    assert len(list(cache.glob("*.npz"))) == 3
    assert not _same(a, b) and not _same(a, c)


@pytest.mark.parametrize("damage", ["garbage", "pickled", "out_of_range", "wrong_clients", "empty"])
def test_a_damaged_or_foreign_file_is_ignored_and_the_layout_rebuilt(cache, damage):
    cfg = load_config(None, SMALL)
    derived = fed_mod.build_federation(cfg)
    (path,) = cache.glob("*.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if damage == "garbage":
        path.write_bytes(b"\x00\xff not a zip")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        if damage == "pickled":  # an object array: loading it would unpickle
            arrays["transfer_idx"] = np.array([{"a": 1}, [2]], dtype=object)
        elif damage == "out_of_range":
            arrays["client_idx"] = arrays["client_idx"] + 10**9
        elif damage == "wrong_clients":
            arrays["client_offsets"] = arrays["client_offsets"][:-1]
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    assert _same(fed_mod.build_federation(cfg), derived)


def test_a_pickled_file_is_never_unpickled(cache, tmp_path):
    """The file named by a layout's key holds a pickle that would write a file when loaded."""
    cfg = load_config(None, SMALL)
    fed_mod.build_federation(cfg)
    (path,) = cache.glob("*.npz")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as fh:
        np.savez(fh, transfer_idx=np.array([Payload()], dtype=object))
    fed_mod.build_federation(cfg)
    assert not marker.exists()


def test_caching_off_or_unwritable_still_builds(tmp_path, monkeypatch):
    cfg = load_config(None, SMALL)
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", "off")
    a = fed_mod.build_federation(cfg)
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", str(blocked))
    assert _same(fed_mod.build_federation(cfg), a)
    assert layout_cache.cache_dir() == blocked and blocked.is_file()


def test_the_cache_keeps_only_the_newest_layouts(cache, monkeypatch):
    monkeypatch.setattr(layout_cache, "KEEP", 2)
    for seed in range(4):
        fed_mod.build_federation(load_config(None, [*SMALL, f"seed={seed}"]))
    assert len(list(cache.glob("*.npz"))) == 2


# --------------------------------------------------------- layouts derived in their own process


def _refuse_process(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a layout process was started")

    monkeypatch.setattr(layout_mod.subprocess, "run", refuse)


def test_layouts_prepared_apart_equal_the_ones_derived_here(cache, monkeypatch):
    cfgs = [load_config(None, SMALL), load_config(None, [*SMALL, "seed=1"])]
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", "off")
    here = [fed_mod.build_federation(c) for c in cfgs]
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", str(cache))
    # the same layout twice (another strategy of a comparison) is derived once
    layout_mod.prepare_layouts([*cfgs, load_config(None, [*SMALL, "strategy=fedavg"])])
    assert len(list(cache.glob("*.npz"))) == 2
    _no_derivation(monkeypatch)
    _refuse_process(monkeypatch)  # all there now: no second process
    layout_mod.prepare_layouts(cfgs)
    assert all(_same(fed_mod.build_federation(c), h) for c, h in zip(cfgs, here, strict=True))


def test_no_layout_cache_means_no_layout_process(monkeypatch):
    monkeypatch.setenv("FEDKT_LAYOUT_CACHE", "off")
    _refuse_process(monkeypatch)
    layout_mod.prepare_layouts([load_config(None, SMALL)])


def test_a_layout_the_config_cannot_produce_is_reported_where_it_is_built(cache):
    cfg = load_config(None, ["num_clients=4", "partition.samples_per_client=5000"])
    layout_mod.prepare_layouts([cfg])  # silent: its process could not derive it
    assert not list(cache.glob("*.npz"))
    with pytest.raises(ConfigError, match="samples_per_client"):
        fed_mod.build_federation(cfg)


def test_the_process_that_prepared_a_layout_never_imports_the_partitioners(cache):
    """What the separate process is for: the long-lived process (a simulation's driver)
    loads the layout without importing Flower Datasets or Hugging Face datasets; and the
    layout process itself imports no torch."""
    probe = (
        "import sys; from fedkt.config import load_config; "
        "from fedkt.data.layout import prepare_layouts; "
        "from fedkt.data.federation import build_federation; "
        f"cfg = load_config(None, {SMALL!r}); prepare_layouts([cfg]); build_federation(cfg); "
        "print(sorted(m for m in ('datasets', 'flwr_datasets') if m in sys.modules))"
    )
    env = {**os.environ, "FEDKT_LAYOUT_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert len(list(cache.glob("*.npz"))) == 1
    lean = "import sys, fedkt.data.layout, fedkt.data.partition; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", lean], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
