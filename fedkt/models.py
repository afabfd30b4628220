"""Model registry. Every model is built from the dataset's input shape and class count,
so one config runs on 8x8 digits, 28x28 MNIST or 32x32 CIFAR-10 unchanged, and clients
may use different architectures (knowledge exchange never looks inside a model).

Every model is ``head(embed(x))``: ``embed`` gives the penultimate representation that
prototype-based methods (FedProto) share; ``head`` is a linear classifier.
"""

from __future__ import annotations

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


@MODELS.register("mlp")
class MLP(Classifier):
    """Two hidden layers (128, 64); the cheapest model, default for the built-in digits."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: int = 128,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.embedding_dim = embedding_dim
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
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


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int | None = None
) -> Classifier:
    """Instantiate architecture ``name``; ``seed`` makes the initial weights reproducible."""
    factory = MODELS.get(name)
    if seed is None:
        return factory(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(input_shape, num_classes)


def embedding_dim(name: str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """The embedding size of architecture ``name``, from a weightless copy built on the
    meta device (no memory, no initialisation): config checks cost no real model."""
    with torch.device("meta"):
        return int(MODELS.get(name)(input_shape, num_classes).embedding_dim)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
