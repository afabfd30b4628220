"""Datasets by name (fedkt/data/named.py): hf:, csv:, parquet:, imagefolder: read through
Hugging Face ``datasets``, converted once, memory-mapped; tables, text and natural
(by-writer) partitions end to end; bad data and bad pairings refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from named_data import CLASSES, write_femnist_like, write_image_folder, write_table, write_text
from tiny import TINY

from fedkt.config import DataConfig, load_config
from fedkt.data import named
from fedkt.data.federation import build_federation
from fedkt.data.partition import natural_groups
from fedkt.data.sources import describe
from fedkt.errors import ConfigError, DataError
from fedkt.experiment import resolve
from fedkt.models import build_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    return {
        "csv": write_table(root / "table.csv"),
        "parquet": write_table(root / "table.parquet"),
        "text": write_text(root / "news.csv"),
        "femnist": write_femnist_like(root / "femnist"),
        "folder": write_image_folder(root / "shapes"),
        "root": root,
    }


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """A fresh fedkt data dir (where conversions are kept) per test."""
    monkeypatch.setenv("FEDKT_DATA", str(tmp_path / "data"))
    from fedkt.data import sources

    sources._cached_named.cache_clear()
    yield tmp_path / "data"
    sources._cached_named.cache_clear()


def cfg(dataset: str, *overrides: str):
    return load_config(None, [*TINY, f"dataset={dataset}", *overrides])


def test_a_csv_table_is_standardised_features_and_numbered_labels(files, data_home):
    ds = named.load_named(f"csv:{files['csv']}", DataConfig(), data_home)
    assert ds.modality == "tabular" and ds.input_shape == (6,) and ds.num_classes == 4
    assert len(ds.train_y) + len(ds.test_y) == 2000 and len(ds.test_y) == 400  # 20% held out
    assert set(np.unique(ds.train_y)) == {0, 1, 2, 3}  # "ant" < "bee" < "cat" < "dog"
    x = ds.tensor(ds.train_x[:])
    assert x.dtype == torch.float32
    assert torch.allclose(x.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(6), atol=1e-3)
    # the held-out split is part of the dataset's definition: the same every time
    again = named._convert(f"csv:{files['csv']}", DataConfig(), None, data_home)
    assert np.array_equal(again["arrays"]["test_y"], ds.test_y)


def test_parquet_gives_the_same_rows_as_csv(files, data_home):
    a = named.load_named(f"csv:{files['csv']}", DataConfig(), data_home)
    b = named.load_named(f"parquet:{files['parquet']}", DataConfig(), data_home)
    assert np.array_equal(a.train_y, b.train_y)
    assert np.allclose(a.train_x, b.train_x, atol=1e-4)


def test_features_and_label_columns_are_chosen_by_config(files, data_home):
    opts = DataConfig(features=["f0", "f3"])
    ds = named.load_named(f"csv:{files['csv']}", opts, data_home)
    assert ds.input_shape == (2,)


def test_conversion_is_kept_and_memory_mapped_and_redone_when_the_file_changes(
    files, data_home, tmp_path
):
    path = write_table(tmp_path / "t.csv", rows=300)
    first = named.load_named(f"csv:{path}", DataConfig(), data_home)
    assert isinstance(first.train_x, np.memmap)
    folders = list((data_home / "named").iterdir())
    assert len(folders) == 1
    named.load_named(f"csv:{path}", DataConfig(), data_home)
    assert list((data_home / "named").iterdir()) == folders  # reused, not converted again
    write_table(path, rows=400, seed=1)
    os.utime(path, ns=(1, 1))  # a changed file, whatever the clock's resolution
    changed = named.load_named(f"csv:{path}", DataConfig(), data_home)
    assert len(changed.train_y) + len(changed.test_y) == 400


def test_text_is_tokenised_by_words_from_the_training_split(files, data_home):
    ds = named.load_named(
        f"csv:{files['text']}", DataConfig(max_length=12, vocab_size=20), data_home
    )
    assert ds.modality == "text" and ds.input_shape == (12, 20) and ds.num_classes == 3
    ids = ds.tensor(ds.train_x[:5])
    assert ids.dtype == torch.int64 and ids.shape == (5, 12)
    assert int(ds.train_x[:].max()) < 20 and int(ds.train_x[:].min()) >= 0


def test_vocabulary_and_token_ids_by_hand():
    vocab = named._vocabulary(["b a b", "c b a", "d"], size=4)  # 2 words kept + pad + unknown
    assert vocab == {"b": 2, "a": 3}  # by count, ties by word
    ids = named._token_ids(["a b d", "", "b b b b b"], vocab, length=4)
    assert ids.tolist() == [[3, 2, 1, 0], [0, 0, 0, 0], [2, 2, 2, 2]]


def test_images_from_a_saved_hf_dataset_and_from_an_image_folder(files, data_home):
    fem = named.load_named(
        f"hf:{files['femnist']}", DataConfig(label="character"), data_home, "writer_id"
    )
    assert fem.modality == "image" and fem.input_shape == (1, 16, 16) and fem.num_classes == 8
    assert fem.train_groups is not None and len(np.unique(fem.train_groups)) == 30
    x = fem.tensor(fem.train_x[:100])
    assert x.shape == (100, 1, 16, 16) and abs(float(x.mean())) < 0.2
    folder = named.load_named(f"imagefolder:{files['folder']}", DataConfig(), data_home)
    assert folder.input_shape == (3, 16, 16) and folder.num_classes == len(CLASSES)
    assert len(folder.train_y) == 120 and len(folder.test_y) == 40  # its own test split


def test_natural_groups_by_hand():
    groups = natural_groups(np.array([2, 0, 2, 1, 0, 2]))
    assert [g.tolist() for g in groups] == [[1, 4], [3], [0, 2, 5]]


def test_a_natural_partition_gives_each_client_one_writer_and_transfers_from_the_rest(
    files, data_home
):
    c = cfg(
        f"hf:{files['femnist']}",
        "data.label=character",
        "partition.by=writer_id",
        "num_clients=10",
        "transfer.size=200",
        "model=cnn-small",
    )
    fed = build_federation(c)
    groups = fed.dataset.train_groups
    owners = [set(groups[idx].tolist()) for idx in fed.client_idx]
    assert all(len(o) == 1 for o in owners) and len(set().union(*owners)) == 10
    for idx, (writer,) in zip(fed.client_idx, owners):  # every training row of the writer
        assert np.array_equal(idx, np.flatnonzero(groups == writer))
    transfer_writers = set(groups[fed.transfer_idx].tolist())
    assert not transfer_writers & set().union(*owners)
    again = build_federation(cfg(
        f"hf:{files['femnist']}", "data.label=character", "partition.by=writer_id",
        "num_clients=10", "transfer.size=200", "model=cnn-small",
    ))  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(fed.client_idx, again.client_idx))


def test_describe_reads_a_named_dataset_and_resolve_checks_the_model(files, data_home):
    shape = describe(cfg(f"csv:{files['csv']}", "model=mlp"))
    assert (shape.num_classes, shape.input_shape, shape.modality) == (4, (6,), "tabular")
    with pytest.raises(
        ConfigError, match=r"'cnn-small' reads image data; .* is tabular \(models for it: mlp\)"
    ):
        resolve(cfg(f"csv:{files['csv']}", "model=cnn-small"))
    with pytest.raises(ConfigError, match=r"'mlp' reads image or tabular data; .* is text"):
        resolve(cfg(f"csv:{files['text']}", "model=mlp"))
    resolve(cfg(f"csv:{files['text']}", "model=text-gru"))  # fine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset=csv:"], "say what to load after csv:"),
        (["dataset=tsv:/x"], "unknown dataset 'tsv:/x'"),
        (["dataset=mnst"], "unknown dataset 'mnst'"),
        (
            ["partition.by=writer", "partition.name=iid"],
            "cannot be combined with partition.name: iid",
        ),
    ],
)
def test_bad_dataset_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files_are_one_line(files, data_home, tmp_path):
    def refused(name, *extra):
        with pytest.raises((ConfigError, DataError)) as err:
            build_federation(cfg(name, "model=mlp", *extra))
        text = str(err.value)
        assert "\n" not in text
        return text

    assert "does not exist" in refused(f"csv:{tmp_path / 'nope.csv'}")
    assert "no label column 'target'" in refused(f"csv:{files['csv']}", "data.label=target")
    holes = tmp_path / "holes.csv"
    holes.write_text("a,b,label\n1,2,x\n3,,y\n5,6,x\n7,8,y\n9,1,x\n")
    assert "column 'b' has 1 missing" in refused(f"csv:{holes}")
    words = tmp_path / "words.csv"
    words.write_text("a,name,label\n1,p,x\n2,q,y\n3,r,x\n4,s,y\n5,t,x\n")
    assert "column 'name' is not numeric" in refused(f"csv:{words}", "data.features=[a, name]")
    assert "no column 'writer'" in refused(f"csv:{files['csv']}", "partition.by=writer")
    assert "has 30 distinct 'writer_id' values" in refused(
        f"hf:{files['femnist']}", "data.label=character", "partition.by=writer_id",
        "num_clients=30", "model=cnn-small",
    )  # fmt: skip
    assert "second view is a shifted image" in refused(f"csv:{files['csv']}", "transfer.views=2")
    assert "applies to hub datasets (hf:OWNER/NAME) only" in refused(
        f"csv:{files['csv']}", "data.revision=main"
    )


def test_a_hub_dataset_loads_the_revision_asked_for_and_caches_each_apart(
    files, data_home, monkeypatch
):
    """The hub call is replaced by the FEMNIST-shaped saved dataset (no network here): what
    is checked is the revision handed to ``datasets.load_dataset`` and the cache key."""
    import datasets

    asked = []

    def hub(target, cache_dir=None, revision=None):
        asked.append((target, revision))
        return datasets.load_from_disk(str(files["femnist"]))

    monkeypatch.setattr(datasets, "load_dataset", hub)
    options = {"label": "character"}
    for revision in ("v1", "v2", "v1"):
        ds = named.load_named(
            "hf:someone/femnist", DataConfig(**options, revision=revision), data_home
        )
        assert len(ds.train_y) > 0
    assert asked == [("someone/femnist", "v1"), ("someone/femnist", "v2")]  # v1 kept once
    assert len(list((data_home / "named").iterdir())) == 2


def test_text_models_read_token_ids_and_ignore_padding():
    for name in ("text-cnn", "text-gru"):
        model = build_model(name, (8, 20), 3, seed=0)
        x = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
        out = model(x)
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        padded = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
        shorter = build_model(name, (3, 20), 3, seed=0)(torch.tensor([[5, 6, 7]]))
        if name == "text-gru":  # padding after the words changes nothing the mean reads
            assert torch.allclose(model(padded), shorter, atol=1e-6)
        assert model.embed(x).shape == (2, 64)


# End to end through Flower's simulation engine: each kind of data under the knowledge
# strategies and FedAvg (one shared engine for the module's runs).
STRATEGIES = ["knfu", "fkd", "fd", "fedavg"]
KINDS = {
    "table": (lambda f: f"csv:{f['csv']}", ["model=mlp"], 0.25),
    "text": (lambda f: f"csv:{f['text']}", ["model=text-cnn"], 1 / 3),
    "femnist": (
        lambda f: f"hf:{f['femnist']}",
        ["data.label=character", "partition.by=writer_id", "num_clients=8", "model=cnn-small"],
        1 / 8,
    ),
}


@pytest.fixture(scope="module")
def engine():
    from fedkt.server.shared_engine import shared_engine

    with shared_engine():
        yield


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_data_learns_under_each_strategy(files, engine, tmp_path, kind, strategy):
    from fedkt.server.simulation import simulate

    name, extra, chance = KINDS[kind]
    data_dir = files["root"] / "data"  # every process (the workers too): one conversion per kind
    c = cfg(
        name(files), f"data_dir={data_dir}", f"strategy={strategy}", "rounds=3",
        "transfer.size=150", *extra,
    )  # fmt: skip
    summary = simulate(c, str(tmp_path))
    assert summary["alma"] > chance + 0.2, (kind, strategy, summary["alma"])


@pytest.mark.slow
def test_fedkt_run_partitions_a_local_hf_dataset_by_writer(files, tmp_path):
    """The issue's command: `fedkt run --set dataset=hf:<path> --set partition.by=writer_id`."""
    env = {**os.environ, "FEDKT_DATA": str(tmp_path / "data")}
    proc = subprocess.run(
        [
            sys.executable, "-m", "fedkt.server", "run", "--quiet", "--out", str(tmp_path / "run"),
            "--set", f"dataset=hf:{files['femnist']}", "--set", "partition.by=writer_id",
            "--set", "data.label=character", "--set", "model=cnn-small",
            "--set", "num_clients=6", "--set", "rounds=2", "--set", "transfer.size=100",
        ],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "by: writer_id" in config and summary["dataset"] == f"hf:{files['femnist']}"
    assert summary["alma"] > 0.5
