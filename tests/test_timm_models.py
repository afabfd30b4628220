"""``model: timm:ARCH`` builds a timm model as a fedkt Classifier (embed = pooled pre-logits,
head = timm's classifier). timm cannot be imported on this machine (it needs torchvision,
which does not work with the pinned CPU torch), so the glue is tested against a stand-in
module with timm's API; the refusal when timm is missing is tested as it is here."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from fedkt.config import load_config
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.models import build_model, embedding_dim


class _Net(nn.Module):
    """timm's model API, in miniature: forward_features, forward_head, get_classifier."""

    def __init__(self, num_classes: int, in_chans: int, img_size=None) -> None:
        super().__init__()
        self.img_size = img_size
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.num_features = 8
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc


@pytest.fixture
def fake_timm(monkeypatch):
    made = []

    def create_model(name, pretrained=False, num_classes=1000, in_chans=3, **kwargs):
        assert not pretrained  # fedkt trains from scratch
        if "img_size" in kwargs and not name.startswith("vit"):
            raise TypeError("unexpected keyword argument 'img_size'")  # as timm's CNNs do
        net = _Net(num_classes, in_chans, kwargs.get("img_size"))
        made.append((name, net))
        return net

    module = types.SimpleNamespace(
        create_model=create_model, is_model=lambda n: n in ("resnet18", "vit_tiny")
    )
    monkeypatch.setitem(sys.modules, "timm", module)
    return made


def test_a_timm_model_is_a_classifier_with_timms_split(fake_timm):
    model = build_model("timm:resnet18", (1, 16, 16), 5, seed=0)
    x = torch.randn(3, 1, 16, 16)
    assert model(x).shape == (3, 5) and model.embed(x).shape == (3, 8)
    assert torch.allclose(model(x), model.head(model.embed(x)))
    assert model.head is fake_timm[-1][1].fc
    keys = list(model.state_dict())
    assert keys == ["net.conv.weight", "net.conv.bias", "net.fc.weight", "net.fc.bias"]
    again = build_model("timm:resnet18", (1, 16, 16), 5, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )


def test_vits_get_the_datasets_image_size(fake_timm):
    build_model("timm:vit_tiny", (3, 32, 32), 10)
    assert fake_timm[-1][1].img_size == (32, 32)
    assert embedding_dim("timm:vit_tiny", (3, 32, 32), 10) == 8


def test_resolve_accepts_timm_models_in_tiers(fake_timm):
    cfg = load_config(None, [
        "model.tiers=[{name: 'timm:resnet18', fraction: 0.5}, {name: cnn-small, fraction: 0.5}]",
    ])  # fmt: skip
    assert "timm:resnet18" in resolve(cfg).architectures
    with pytest.raises(ConfigError, match="timm has no model 'nope'"):
        resolve(load_config(None, ["model=timm:nope"]))


def test_without_timm_a_timm_model_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` gives when it is absent
    with pytest.raises(ConfigError, match=r"^model: 'timm:resnet18' needs timm \(pip install timm"):
        resolve(load_config(None, ["model=timm:resnet18"]))
