"""Model registry. Every model is built from the dataset's input shape and class count,
so one config runs on 8x8 digits, 28x28 MNIST or 32x32 CIFAR-10 unchanged, and clients
may use different architectures (knowledge exchange never looks inside a model).

Each entry says which data it reads (``modalities``: image, tabular, text; see
:class:`fedkt.data.sources.ArrayDataset`): a config pairing a model with data it cannot
read is refused in one line when the experiment is resolved.

Every model is ``head(embed(x))``: ``embed`` gives the penultimate representation that
prototype-based methods (FedProto) share; ``head`` is a linear classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fedkt.registry import Registry

MODELS: Registry["Classifier"] = Registry("model")


def _flat_size(module: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *shape)).numel())


class Classifier(nn.Module):
    """``forward(x) = head(embed(x))``."""

    embedding_dim: int
    head: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


TIMM_PREFIX = "timm:"


def is_model(name: str) -> bool:
    """A registered model, or ``timm:ARCH`` (built by timm when it is installed)."""
    return name in MODELS or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def _factory(name: str) -> Callable[..., Classifier]:
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        return lambda input_shape, num_classes: TimmClassifier(arch, input_shape, num_classes)
    return MODELS.get(name)


def model_modalities(name: str) -> tuple[str, ...]:
    """The kinds of data model ``name`` reads (an entry without the attribute: images)."""
    if name.startswith(TIMM_PREFIX):
        return ("image",)
    return tuple(getattr(MODELS.get(name), "modalities", ("image",)))


def check_timm(name: str) -> str | None:
    """Why ``timm:ARCH`` cannot be built here (None: it can): timm missing or broken (it
    needs a torchvision built for the installed torch), or no such architecture."""
    arch = name[len(TIMM_PREFIX) :]
    try:
        import timm
    except Exception as exc:  # ImportError, or timm's own import of a broken torchvision
        return (
            f"{name!r} needs timm (pip install timm, with a torchvision built for this torch): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
    if not timm.is_model(arch):
        return f"timm has no model {arch!r} (see timm.list_models())"
    return None


@MODELS.register("mlp")
class MLP(Classifier):
    """Two hidden layers (128, 64); the cheapest model, default for the built-in digits, and
    the model for tables (a row of features is its input as it is)."""

    modalities = ("image", "tabular")

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: int = 128,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, embedding_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvNet(Classifier):
    """Two conv + max-pool blocks, a dense embedding layer and a linear head."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, int],
        kernel: int,
        embedding_dim: int,
    ) -> None:
        super().__init__()
        c = input_shape[0]
        self.embedding_dim = embedding_dim
        features = nn.Sequential(
            nn.Conv2d(c, channels[0], kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.body = nn.Sequential(
            features, nn.Linear(_flat_size(features, input_shape), embedding_dim), nn.ReLU()
        )
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register("cnn-small")
def small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    """Two 3x3 conv blocks (16, 32 channels), a 64-unit layer and a linear head: fast on CPU."""
    return ConvNet(input_shape, num_classes, (16, 32), 3, 64)


@MODELS.register("cnn-fedavg")
def fedavg_cnn(input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    """The CNN of McMahan et al. (2017): two 5x5 convs (32, 64), a 512-unit dense layer."""
    return ConvNet(input_shape, num_classes, (32, 64), 5, 512)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet8")
class ResNet8(Classifier):
    """A ResNet-8-like net: stem + three basic blocks (16, 32, 64) + global pooling."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int = 16
    ) -> None:
        super().__init__()
        c = input_shape[0]
        self.embedding_dim = 4 * width
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layers = nn.Sequential(
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)


class TimmClassifier(Classifier):
    """A model of the timm library (``model: timm:resnet18``, ``timm:mobilenetv3_small_100``,
    ``timm:vit_tiny_patch16_224``...), built untrained for the dataset's channels, image
    size (where the architecture takes one, as ViTs do) and classes. ``embed`` is timm's
    pooled pre-logits features, ``head`` its classifier, so prototype methods and shared
    heads see the same split as in fedkt's own models. timm is optional: it is imported only
    when such a model is built."""

    modalities = ("image",)

    def __init__(self, arch: str, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        import timm

        c, h, w = input_shape
        kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": c}
        try:
            self.net = timm.create_model(arch, img_size=(h, w), **kwargs)
        except TypeError:  # an architecture without an image size (CNNs)
            self.net = timm.create_model(arch, **kwargs)
        self.embedding_dim = int(self.net.num_features)

    @property
    def head(self) -> nn.Module:  # type: ignore[override]
        return self.net.get_classifier()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


class _TextClassifier(Classifier):
    """Token ids (N, L), 0 = padding -> word embeddings -> a sequence encoder -> the mean
    (``pool="mean"``) or maximum (``"max"``) over the non-padding positions -> a dense
    embedding layer -> a linear head. ``input_shape`` is (L, vocabulary size)."""

    modalities = ("text",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        encoder: nn.Module,
        width: int,
        pool: str,
        embedding_dim: int = 64,
        words: int = 64,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"a text model reads (tokens, vocabulary), got {input_shape}")
        self.words = nn.Embedding(int(input_shape[1]), words, padding_idx=0)
        self.encoder = encoder
        self.pool = pool
        self.embedding_dim = embedding_dim
        self.dense = nn.Sequential(nn.Linear(width, embedding_dim), nn.ReLU())
        self.head = nn.Linear(embedding_dim, num_classes)

    def encode(self, e: torch.Tensor) -> torch.Tensor:  # (N, L, words) -> (N, L, width)
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.long()
        mask = (tokens != 0).unsqueeze(-1)  # (N, L, 1)
        h = self.encode(self.words(tokens))
        if self.pool == "max":
            h = h.masked_fill(~mask, float("-inf")).amax(dim=1)
            h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # an empty text: 0
        else:
            h = (h * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return self.dense(h)


@MODELS.register("text-cnn")
class TextCNN(_TextClassifier):
    """Kim-style text CNN: 64-d word embeddings, a width-3 convolution (64 filters), max
    over positions, a 64-unit layer and a linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__(input_shape, num_classes, nn.Conv1d(64, width, 3, padding=1), width, "max")

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(e.transpose(1, 2))).transpose(1, 2)


@MODELS.register("text-gru")
class TextGRU(_TextClassifier):
    """A one-layer GRU (64 units) over 64-d word embeddings, its outputs averaged over the
    words, a 64-unit layer and a linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__(
            input_shape, num_classes, nn.GRU(64, width, batch_first=True), width, "mean"
        )

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        return self.encoder(e)[0]


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None
) -> Classifier:
    """Instantiate architecture ``name``; ``seed`` makes the initial weights reproducible."""
    factory = _factory(name)
    if seed is None:
        return factory(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(input_shape, num_classes)


def embedding_dim(name: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    """The embedding size of architecture ``name``, from a weightless copy built on the
    meta device (no memory, no initialisation): config checks cost no real model."""
    with torch.device("meta"):
        return int(_factory(name)(input_shape, num_classes).embedding_dim)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
