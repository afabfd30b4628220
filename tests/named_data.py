"""Small local datasets in the formats ``dataset: hf:/csv:/parquet:/imagefolder:`` read, made
on the fly (the tests run offline): a table, a text classification set, a FEMNIST-shaped
image set with a writer column, and an image folder. Each is learnable, so a run on it
must beat chance."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ["ant", "bee", "cat", "dog"]


def write_table(path: Path, rows: int = 2000, features: int = 6, seed: int = 0) -> Path:
    """Four Gaussian clusters in ``features`` dimensions; string labels; one id column that
    is not a feature (``row``) is left out only when ``data.features`` says so."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (len(CLASSES), features))
    y = rng.integers(0, len(CLASSES), rows)
    x = centers[y] + rng.normal(0, 1.0, (rows, features))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.DataFrame({f"f{i}": x[:, i] for i in range(features)})
        frame["label"] = [CLASSES[i] for i in y]
        frame.to_parquet(path)
        return path
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"f{i}" for i in range(features)] + ["label"])
        for xi, yi in zip(x, y):
            w.writerow([f"{v:.4f}" for v in xi] + [CLASSES[yi]])
    return path


TOPICS = {
    0: ["goal", "match", "team", "score", "league"],
    1: ["market", "stock", "profit", "bank", "shares"],
    2: ["chip", "software", "phone", "robot", "cloud"],
}
FILLER = ["the", "a", "of", "today", "said", "new", "report", "after", "in", "on", "big", "week"]


def write_text(path: Path, rows: int = 1500, seed: int = 0) -> Path:
    """Three topics; each text is filler words with two or three words of its topic."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for _ in range(rows):
            k = int(rng.integers(0, 3))
            words = list(rng.choice(FILLER, size=int(rng.integers(4, 10))))
            words += list(rng.choice(TOPICS[k], size=int(rng.integers(2, 4))))
            rng.shuffle(words)
            w.writerow([" ".join(words).capitalize() + ".", ["sports", "business", "tech"][k]])
    return path


def _glyph(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A bar image: class k lights rows/columns by its own pattern, plus a writer's noise."""
    img = np.zeros((size, size), dtype=np.float64)
    band = size // 4
    r = label % 4
    if label < 4:
        img[r * band : (r + 1) * band, :] = 1.0
    else:
        img[:, r * band : (r + 1) * band] = 1.0
    img += rng.normal(0, 0.25, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_femnist_like(path: Path, writers: int = 30, per_writer: int = 40, seed: int = 0) -> Path:
    """A Hugging Face dataset saved to disk (``save_to_disk``), FEMNIST-shaped: grey images,
    a ``writer_id`` column and a ``character`` ClassLabel of 8 classes; each writer uses a
    few classes more than the others (natural label skew). Only a train split, as the hub's
    ``flwrlabs/femnist``."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels, ids = [], [], []
    for wr in range(writers):
        favourite = rng.choice(8, size=3, replace=False)
        for _ in range(per_writer):
            k = int(rng.choice(favourite)) if rng.random() < 0.8 else int(rng.integers(0, 8))
            images.append(Image.fromarray(_glyph(k, rng), mode="L"))
            labels.append(k)
            ids.append(f"w{wr:03d}")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "character": datasets.ClassLabel(names=[f"c{i}" for i in range(8)]),
            "writer_id": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": images, "character": labels, "writer_id": ids}, features=features
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
    return path


def write_image_folder(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """``path/train/<class>/*.png`` and ``path/test/<class>/*.png``, RGB, 4 classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class // 3)):
        for k, name in enumerate(CLASSES):
            folder = path / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                grey = _glyph(k, rng)
                Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"{i}.png")
    return path
