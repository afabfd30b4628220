"""Datasets by name: any Hugging Face dataset, or a user's own files, as an ArrayDataset.

``dataset:`` takes, besides the built-in names,

- ``hf:NAME``            a Hugging Face Hub dataset (``hf:uoft-cs/cifar10``), or a local
                         folder written by ``datasets``' ``save_to_disk`` or holding data files;
- ``csv:PATH``           a CSV file, or a folder whose files are named ``train*`` / ``test*``;
- ``parquet:PATH``       the same, Parquet;
- ``imagefolder:DIR``    one sub-folder per class (``DIR/train/<class>/...`` and
                         ``DIR/test/<class>/...`` for fixed splits).

All four go through Hugging Face ``datasets`` (what Flower Datasets builds on), so a hub
dataset and a local file take the same code path, and the offline tests cover it.

Why a conversion step: fedkt's clients index their rows by position, in every process,
thousands of times (:class:`~fedkt.data.sources.ArrayDataset`). The first use of a dataset
with given ``data:`` options converts it once into NumPy files under fedkt's data dir
(``named/<digest>/``): uint8 images, float32 table features or int32 token ids, int64 labels
and, for natural partitions, the group id of every row. Later processes memory-map those
files, so a client's process reads the pages of the rows it uses, not the dataset (the same
discipline as the built-in datasets: float tensors are made only for a client's rows).

The modality is read from the columns: an image column makes an image dataset, a string
column a text dataset (tokenised by words: the ``data.vocab_size`` - 2 most frequent words of
the training split, 0 padding, 1 unknown, ``data.max_length`` tokens per row), otherwise the
numeric columns (or the ``data.features`` listed) are a table. Labels are the ``data.label``
column (class names or any values: they are numbered in sorted order). Without a test split,
``data.test_fraction`` of the rows is held out, stratified, with a fixed seed: it is part of
the dataset's definition, not of an experiment's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkt.data import array_store
from fedkt.errors import DataError

if TYPE_CHECKING:
    from fedkt.config import DataConfig
    from fedkt.data.sources import ArrayDataset

PREFIXES = ("hf", "csv", "parquet", "imagefolder")
#: Bumped when the conversion changes, so old converted copies are not reused.
FORMAT_VERSION = 2
_WORD = re.compile(r"[a-z0-9']+")
PAD, UNKNOWN = 0, 1


def is_named(name: str) -> bool:
    """Whether ``name`` is a ``prefix:target`` dataset name (not a built-in one)."""
    prefix, sep, target = name.partition(":")
    return bool(sep) and prefix in PREFIXES and bool(target)


def check_name(name: str) -> str:
    """``name`` if it is a well-formed ``prefix:target``; a one-line error otherwise."""
    prefix, sep, target = name.partition(":")
    if not sep or prefix not in PREFIXES:
        raise ValueError(
            f"unknown dataset {name!r} (a built-in name, or one of "
            + ", ".join(f"{p}:..." for p in PREFIXES)
            + ")"
        )
    if not target:
        raise ValueError(f"dataset {name!r}: say what to load after {prefix}:")
    return name


def conversion_key(name: str, options: DataConfig, group_column: str | None) -> str:
    """Digest of everything the converted arrays depend on."""
    prefix, _, target = name.partition(":")
    local = Path(target).expanduser()
    what: dict[str, Any] = {
        "name": name,
        "options": options.model_dump(mode="json"),
        "group": group_column,
        "version": FORMAT_VERSION,
    }
    if local.exists():
        what["files"] = array_store.fingerprint(local.resolve())
    elif prefix != "hf":
        raise DataError(f"{name}: {target} does not exist")
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _splits_of_folder(folder: Path, suffixes: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            split = "test" if p.stem.lower().startswith("test") else "train"
            found.setdefault(split, []).append(str(p))
    if "train" not in found:
        raise DataError(f"{folder}: no {'/'.join(suffixes)} file (named train* and test*) in it")
    return found


def _load_raw(name: str, cache: Path, revision: str | None = None) -> Any:
    """The dataset as a ``datasets.DatasetDict``; ``revision`` (hub datasets only) is the
    branch, tag or commit to load."""
    import datasets

    prefix, _, target = name.partition(":")
    path = Path(target).expanduser()
    if revision is not None and (prefix != "hf" or path.exists()):
        raise DataError(
            f"{name}: data.revision={revision!r} applies to hub datasets (hf:OWNER/NAME) only, "
            "not to local files"
        )
    cache_dir = str(cache / "hf")
    datasets.disable_progress_bars()
    try:
        if prefix in ("csv", "parquet"):
            suffixes = (".csv", ".tsv") if prefix == "csv" else (".parquet",)
            files = _splits_of_folder(path, suffixes) if path.is_dir() else {"train": [str(path)]}
            extra = {"sep": "\t"} if prefix == "csv" and path.suffix.lower() == ".tsv" else {}
            return datasets.load_dataset(prefix, data_files=files, cache_dir=cache_dir, **extra)
        if prefix == "imagefolder":
            if not path.is_dir():
                raise DataError(f"{name}: {path} is not a folder")
            return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
        if path.is_dir() and (
            (path / "dataset_dict.json").exists() or (path / "state.json").exists()
        ):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(target, cache_dir=cache_dir, revision=revision)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{name}: {exc}") from None
    except Exception as exc:  # datasets raises many types for a bad file or hub name
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot load it ({type(exc).__name__}: {first})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _pick_split(dd: Any, wanted: str | None, fallback: Sequence[str], name: str) -> str | None:
    if wanted is not None:
        if wanted not in dd:
            raise DataError(f"{name}: no split {wanted!r} (it has {', '.join(dd)})")
        return wanted
    return next((s for s in fallback if s in dd), None)


def _values(table: Any, column: str, name: str) -> np.ndarray:
    """A column of an Arrow table as one NumPy array (no row-by-row Python); missing
    values are refused."""
    col = table.column(column)
    if col.null_count:
        raise DataError(f"{name}: column {column!r} has {col.null_count} missing value(s)")
    return np.asarray(col.to_numpy(zero_copy_only=False))


def _numbered(values: np.ndarray, feature: Any = None) -> tuple[np.ndarray, list[str]]:
    """Ids 0..K-1 and names: a ClassLabel's own, else the sorted distinct values."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return values.astype(np.int64), list(feature.names)
    try:
        distinct, ids = np.unique(values, return_inverse=True)
    except TypeError:  # values of mixed types: order them by their text
        distinct, ids = np.unique(values.astype(str), return_inverse=True)
    return ids.astype(np.int64).reshape(-1), [str(v) for v in distinct]


def _holdout(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test row indices with a fixed seed (part of the dataset's definition)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        tr, te = train_test_split(rows, test_size=fraction, random_state=0, stratify=stratify)
    except ValueError:
        tr, te = train_test_split(rows, test_size=fraction, random_state=0)
    return np.sort(tr), np.sort(te)


def _column(features: Any, wanted: str | None, kind: str, exclude: set[str]) -> str | None:
    """The column named ``wanted``, else the first column of ``kind`` ("image"/"text")."""
    import datasets

    if wanted is not None:
        return wanted if wanted in features else None
    for col, feat in features.items():
        if col in exclude:
            continue
        if kind == "image" and isinstance(feat, datasets.Image):
            return col
        if (
            kind == "text"
            and isinstance(feat, datasets.Value)
            and feat.dtype in ("string", "large_string")
        ):
            return col
    return None


def _images(column: list[Any], decode: Any, size: tuple[int, int] | None, name: str) -> np.ndarray:
    """The images of ``column`` (stored values, decoded one at a time by ``decode``) as uint8
    (N, C, H, W); grey or RGB decided by the first image."""
    first = decode(column[0])
    mode = "L" if first.mode in ("L", "1", "I", "I;16", "F") else "RGB"
    shape = tuple(size) if size else (first.size[1], first.size[0])
    out = np.empty((len(column), 1 if mode == "L" else 3, *shape), dtype=np.uint8)
    for i, value in enumerate(column):
        img = decode(value).convert(mode)
        if (img.size[1], img.size[0]) != shape:
            if size is None:
                raise DataError(
                    f"{name}: images differ in size ({img.size[0]}x{img.size[1]} vs "
                    f"{shape[1]}x{shape[0]}); set data.image_size: [H, W]"
                )
            img = img.resize((shape[1], shape[0]))
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def _vocabulary(texts: list[str], size: int) -> dict[str, int]:
    counts = Counter(w for t in texts for w in _WORD.findall((t or "").lower()))
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, size - 2)]
    return {w: i + 2 for i, (w, _) in enumerate(kept)}


def _token_ids(texts: list[str], vocab: dict[str, int], length: int) -> np.ndarray:
    out = np.full((len(texts), length), PAD, dtype=np.int32)
    for i, t in enumerate(texts):
        ids = [vocab.get(w, UNKNOWN) for w in _WORD.findall((t or "").lower())][:length]
        out[i, : len(ids)] = ids
    return out


def _table(table: Any, columns: list[str], name: str) -> np.ndarray:
    out = np.empty((table.num_rows, len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        try:
            values = _values(table, col, name).astype(np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{name}: column {col!r} is not numeric") from None
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise DataError(f"{name}: column {col!r} has {bad} missing or non-finite value(s)")
        out[:, j] = values
    return out


def _convert(name: str, options: DataConfig, group: str | None, cache: Path) -> dict[str, Any]:
    """Arrays and metadata of the converted dataset (see the module docstring)."""
    import datasets

    dd = _load_raw(name, cache, options.revision)
    train_split = _pick_split(dd, options.train_split, ("train",), name) or next(iter(dd))
    test_split = _pick_split(dd, options.test_split, ("test", "validation"), name)
    train = dd[train_split]
    features = train.features
    if options.label not in features:
        raise DataError(
            f"{name}: no label column {options.label!r} (columns: {', '.join(features)}); "
            "set data.label"
        )
    if group is not None and group not in features:
        raise DataError(
            f"{name}: no column {group!r} to partition by (columns: {', '.join(features)})"
        )
    reserved = {options.label} | ({group} if group else set())
    # Arrow tables, read column-wise: the rows of a million-row table one at a time through
    # `datasets`' formatters took minutes and gigabytes
    train = dd[train_split].with_format("arrow")[:]
    if test_split is None:
        labels_all, _ = _numbered(_values(train, options.label, name), features[options.label])
        tr_rows, te_rows = _holdout(labels_all, options.test_fraction)
        train, test = train.take(tr_rows), train.take(te_rows)
    else:
        test = dd[test_split].with_format("arrow")[:]
    labels, classes = _numbered(
        np.concatenate([_values(d, options.label, name) for d in (train, test)]),
        features[options.label],
    )
    tr_y, te_y = labels[: train.num_rows], labels[train.num_rows :]

    tabular = options.features is not None  # listed feature columns: a table, whatever else
    image_col = None if tabular else _column(features, options.image, "image", reserved)
    text_col = None if tabular or image_col else _column(features, options.text, "text", reserved)
    for wanted, got in ((options.image, image_col), (options.text, text_col)):
        if wanted is not None and got is None:
            raise DataError(f"{name}: no column {wanted!r} (columns: {', '.join(features)})")
    meta: dict[str, Any] = {"name": name, "classes": classes}
    if image_col is not None:
        size = options.image_size
        decode = features[image_col].decode_example
        tr_x, te_x = (
            _images(d.column(image_col).to_pylist(), decode, size, name) for d in (train, test)
        )
        flat = tr_x[: min(len(tr_x), 10_000)].astype(np.float64) / 255.0
        meta.update(
            modality="image",
            columns=[image_col],
            scale=255.0,
            mean=flat.mean(axis=(0, 2, 3)).tolist(),
            std=np.maximum(flat.std(axis=(0, 2, 3)), 1e-6).tolist(),
        )
    elif text_col is not None:
        texts = [d.column(text_col).to_pylist() for d in (train, test)]
        vocab = _vocabulary(texts[0], options.vocab_size)
        tr_x, te_x = (_token_ids(t, vocab, options.max_length) for t in texts)
        meta.update(modality="text", columns=[text_col], vocab_size=len(vocab) + 2)
    else:
        numeric = [
            c
            for c, f in features.items()
            if c not in reserved
            and isinstance(f, datasets.Value)
            and (f.dtype.startswith(("int", "uint", "float")) or f.dtype == "bool")
        ]
        columns = list(options.features) if options.features else numeric
        missing = [c for c in columns if c not in features]
        if missing:
            raise DataError(f"{name}: no column {missing[0]!r} (columns: {', '.join(features)})")
        if not columns:
            raise DataError(
                f"{name}: no image, text or numeric feature column besides {options.label!r}"
            )
        tr_x, te_x = _table(train, columns, name), _table(test, columns, name)
        mean = tr_x.mean(axis=0, dtype=np.float64)
        std = tr_x.std(axis=0, dtype=np.float64)
        meta.update(
            modality="tabular",
            columns=columns,
            mean=mean.tolist(),
            std=np.where(std > 1e-12, std, 1.0).tolist(),
        )
    arrays = {"train_x": tr_x, "train_y": tr_y, "test_x": te_x, "test_y": te_y}
    if group is not None:
        ids, distinct = _numbered(_values(train, group, name))
        arrays["train_groups"] = ids
        meta["groups"] = len(distinct)
    return {"arrays": arrays, "meta": meta}


def load_named(
    name: str, options: DataConfig, cache: Path, group_column: str | None = None
) -> ArrayDataset:
    """The dataset ``name`` (``prefix:target``) under ``options``, converted once into
    ``cache/named/<digest>`` and memory-mapped from there."""
    from fedkt.data.sources import stored_dataset

    folder = cache / "named" / conversion_key(name, options, group_column)
    if not array_store.is_stored(folder):
        converted = _convert(name, options, group_column, cache)
        array_store.store(folder, converted["arrays"], converted["meta"])
    arr, meta = array_store.load(folder)
    modality = meta["modality"]
    return stored_dataset(
        name,
        arr,
        len(meta["classes"]),
        float(meta.get("scale", 1.0)),
        tuple(meta.get("mean", ())),
        tuple(meta.get("std", ())),
        modality=modality,
        vocab_size=int(meta.get("vocab_size", 0)),
        train_groups=np.asarray(arr["train_groups"]) if "train_groups" in arr else None,
    )
