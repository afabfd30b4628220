"""Loaders on small fixtures written in the real on-disk formats, checksums, fetching."""

import gzip
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from tiny import RunsCode

from fedkt.data import array_store
from fedkt.data import fetch as fetch_mod
from fedkt.data.formats import read_cifar_batch, read_idx, write_idx
from fedkt.data.sources import (
    CIFAR_DIR,
    CIFAR_TRAIN,
    DatasetSpec,
    FileCheck,
    _idx_loader,
    _load_cifar10,
    load_dataset,
    verify_files,
)
from fedkt.errors import DataError

IDX_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _write_mnist_like(folder: Path, n_train=20, n_test=10) -> None:
    rng = np.random.default_rng(0)
    write_idx(folder / IDX_NAMES[0], rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / IDX_NAMES[1], np.arange(n_train) % 10)
    write_idx(folder / IDX_NAMES[2], rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / IDX_NAMES[3], np.arange(n_test) % 10)


def test_idx_round_trip_and_loader(tmp_path):
    _write_mnist_like(tmp_path)
    ds = _idx_loader("mnist", 0.1307, 0.3081)(tmp_path)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert ds.train_y.tolist() == [i % 10 for i in range(20)]
    assert ds.tensor(ds.train_x[:2]).dtype.is_floating_point
    # gzip-compressed IDX reads the same
    gz = tmp_path / "labels.gz"
    gz.write_bytes(gzip.compress((tmp_path / IDX_NAMES[1]).read_bytes()))
    assert np.array_equal(read_idx(gz), ds.train_y)


def test_idx_rejects_garbage_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    _write_mnist_like(tmp_path)
    data = (tmp_path / IDX_NAMES[0]).read_bytes()
    (tmp_path / "trunc").write_bytes(data[:-5])
    with pytest.raises(DataError, match="header implies"):
        read_idx(tmp_path / "trunc")


def test_idx_bytes_are_memory_mapped_read_only(tmp_path):
    """Uncompressed one-byte IDX is mapped, not copied, so the simulation's processes share
    the file's pages; values match a plain read, and nothing can write through it."""
    _write_mnist_like(tmp_path)
    path = tmp_path / IDX_NAMES[0]
    mapped = read_idx(path)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    plain = np.frombuffer(path.read_bytes(), np.uint8, offset=16).reshape(20, 28, 28)
    assert np.array_equal(mapped, plain)
    with pytest.raises(ValueError, match="read-only"):
        mapped[0, 0, 0] = 1
    # multi-byte big-endian data is converted to native order in memory
    big = tmp_path / "big"
    values = np.array([[1, -2], [300000, 4]], dtype=">i4")
    big.write_bytes(bytes([0, 0, 0x0C, 2]) + (2).to_bytes(4, "big") * 2 + values.tobytes())
    got = read_idx(big)
    assert not isinstance(got, np.memmap) and got.dtype.isnative
    assert got.tolist() == [[1, -2], [300000, 4]]


def _write_cifar(folder: Path, per_batch=4) -> None:
    base = folder / CIFAR_DIR
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*CIFAR_TRAIN, "test_batch"):
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(i) for i in rng.integers(0, 10, per_batch)],
            b"batch_label": name.encode(),
        }
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


def test_cifar_python_batches(tmp_path):
    _write_cifar(tmp_path)
    ds = _load_cifar10(tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    first = pickle.load(open(tmp_path / CIFAR_DIR / "data_batch_1", "rb"), encoding="bytes")
    assert np.array_equal(
        ds.train_x[0].reshape(-1), first[b"data"][0]
    )  # row-major CHW, as published
    (tmp_path / "junk").write_bytes(b"\x80\x04junk")
    with pytest.raises(DataError, match="not a CIFAR python batch"):
        read_cifar_batch(tmp_path / "junk")


def test_cifar_is_decoded_once_then_memory_mapped(tmp_path, monkeypatch):
    """The batches are unpickled once into .npy files that later loads map read-only; a
    changed batch is decoded again; a read-only folder still loads, decoded in memory."""
    _write_cifar(tmp_path)
    first = _load_cifar10(tmp_path)
    stored = list((tmp_path / CIFAR_DIR / ".fedkt-arrays").iterdir())
    assert len(stored) == 1
    again = _load_cifar10(tmp_path)
    assert isinstance(again.train_x, np.memmap) and not again.train_x.flags.writeable
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
    assert again.train_y.dtype == np.int64 and not isinstance(again.train_y, np.memmap)
    batch = tmp_path / CIFAR_DIR / "test_batch"
    content = pickle.load(open(batch, "rb"), encoding="bytes")
    content[b"labels"] = [9] * len(content[b"labels"])
    with open(batch, "wb") as fh:
        pickle.dump(content, fh, protocol=2)
    assert _load_cifar10(tmp_path).test_y.tolist() == [9, 9, 9, 9]
    assert len(list((tmp_path / CIFAR_DIR / ".fedkt-arrays").iterdir())) == 2
    fresh = tmp_path / "ro"
    _write_cifar(fresh)

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(array_store, "store", read_only)
    ds = _load_cifar10(fresh)
    assert ds.train_x.shape == (20, 3, 32, 32) and not isinstance(ds.train_x, np.memmap)


_DIGITS_PROBE = """
import json, sys
from fedkt.data.sources import load_dataset
d = load_dataset("digits", sys.argv[1])
print(json.dumps({"sklearn": "sklearn" in sys.modules, "mapped": type(d.train_x).__name__,
                  "sums": [int(d.train_x.sum()), int(d.train_y.sum()), int(d.test_x.sum()),
                           int(d.test_y.sum())]}))
"""


def _digits_in_a_fresh_process(folder: Path) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _DIGITS_PROBE, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_digits_are_split_once_then_memory_mapped_without_scikit_learn(tmp_path, monkeypatch):
    """scikit-learn (with SciPy, pandas, pyarrow: 138 MiB a process) is imported by the
    first load only; later processes map the stored split, the same arrays; a read-only
    folder still loads, split in memory."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None]
    tr_x, te_x, tr_y, te_y = train_test_split(
        x, bunch.target, test_size=0.25, random_state=0, stratify=bunch.target
    )
    want = [int(tr_x.sum()), int(tr_y.sum()), int(te_x.sum()), int(te_y.sum())]
    first = _digits_in_a_fresh_process(tmp_path / "digits")
    assert first["sklearn"] and first["sums"] == want
    assert len(list((tmp_path / "digits" / ".fedkt-arrays").iterdir())) == 1
    again = _digits_in_a_fresh_process(tmp_path / "digits")
    assert not again["sklearn"] and again["mapped"] == "memmap" and again["sums"] == want

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(array_store, "store", read_only)
    ds = load_dataset("digits", tmp_path / "ro")
    assert not isinstance(ds.train_x, np.memmap) and int(ds.train_x.sum()) == want[0]
    assert np.array_equal(ds.test_y, te_y)


def test_a_cifar_batch_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as fh:
        pickle.dump({b"data": RunsCode(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match=r"not a CIFAR python batch: refused posix\.system"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_real_cifar_checksums_reject_fixtures(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(DataError, match="md5 checksum"):
        load_dataset("cifar10", tmp_path)


def test_corrupted_file_fails_checksum_with_clear_message(tmp_path):
    _write_mnist_like(tmp_path)
    with pytest.raises(DataError, match=r"fails its sha256 checksum .* corrupted"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="is missing; run `fedkt data fetch mnist`"):
        load_dataset("mnist", tmp_path / "empty")


def _fixture_spec(folder: Path, sources) -> DatasetSpec:
    checks = tuple(
        FileCheck(n, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for n in IDX_NAMES
    )
    return DatasetSpec("fixture", "test", checks, _idx_loader("fixture", 0.5, 0.5), tuple(sources))


@pytest.fixture
def http_server(tmp_path):
    """Serve gzipped IDX fixtures over loopback HTTP, like a dataset mirror."""
    src = tmp_path / "src"
    src.mkdir()
    _write_mnist_like(src)
    www = tmp_path / "www"
    www.mkdir()
    for n in IDX_NAMES:
        (www / f"{n}.gz").write_bytes(gzip.compress((src / n).read_bytes()))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield src, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_from_mirror_verifies_and_falls_back(tmp_path, http_server, monkeypatch):
    src, url = http_server
    spec = _fixture_spec(src, [fetch_mod.UrlSource(("http://127.0.0.1:9/nothing/", url))])
    monkeypatch.setattr(fetch_mod.DATASETS, "create", lambda name, *a, **k: spec)
    target = tmp_path / "data"
    logs = []
    assert fetch_mod.fetch("fixture", target, log=logs.append) == target
    assert verify_files(spec, target) == []
    assert any("trying download" in m for m in logs)
    fetch_mod.fetch("fixture", target, log=logs.append)
    assert "already present and verified" in logs[-1]


def test_fetch_failure_names_every_place_tried(tmp_path, http_server, monkeypatch):
    src, url = http_server
    # The mirror serves files whose digest does not match the spec: must be refused.
    wrong = DatasetSpec(
        "fixture",
        "t",
        tuple(FileCheck(n, "0" * 64) for n in IDX_NAMES),
        _idx_loader("f", 0, 1),
        (
            fetch_mod.UrlSource((url,)),
            fetch_mod.NpmSource("fedkt-no-such-package-xyz@0.0.1", "data"),
        ),
    )
    monkeypatch.setattr(fetch_mod.DATASETS, "create", lambda name, *a, **k: wrong)
    with pytest.raises(DataError) as exc:
        fetch_mod.fetch("fixture", tmp_path / "d", log=lambda m: None)
    msg = str(exc.value)
    assert "\n" not in msg and "could not obtain fixture" in msg
    assert (
        str(tmp_path / "d") in msg and url in msg and "npm package fedkt-no-such-package-xyz" in msg
    )


def _tarball(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """A tar.gz of (name, contents or None for a folder, symlink target or None)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("by_hand", [False, True])
def test_an_archive_unpacks_inside_its_folder_on_any_python(tmp_path, by_hand):
    """``npm pack``'s tarballs and the CIFAR archive unpack with Python's ``data`` filter
    where it exists and by the same rules by hand where it does not (Debian 12's 3.11.2,
    where ``extractall(filter=...)`` is a TypeError): both paths run here."""
    import tarfile

    unpack = fetch_mod.extract_plain_members if by_hand else fetch_mod.extract_safely
    members = [("package", None, None), ("package/data/a", b"abc", None)]
    good = _tarball(tmp_path / "good.tgz", members)
    with tarfile.open(good) as tar:
        unpack(tar, tmp_path / "out")
    assert (tmp_path / "out" / "package" / "data" / "a").read_bytes() == b"abc"
    bad_cases = {
        "up": [("../escaped", b"x", None)],
        "absolute": [(str(tmp_path / "abs"), b"x", None)],
        "link": [("package/link", None, "/etc/passwd")],
    }
    refused = []
    for case, members in bad_cases.items():
        bad = _tarball(tmp_path / f"{case}.tgz", members)
        with tarfile.open(bad) as tar:
            try:
                unpack(tar, tmp_path / case)
            except (fetch_mod.FetchFailed, tarfile.TarError):
                refused.append(case)
    # Python's filter refuses the link and the way up, and unpacks an absolute name inside
    # the folder (its leading "/" dropped); by hand, all three are refused
    by_hand = by_hand or not hasattr(tarfile, "data_filter")
    assert refused == (list(bad_cases) if by_hand else ["up", "link"])
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "abs").exists()
    assert not (tmp_path / "link" / "package" / "link").exists()
