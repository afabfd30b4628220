"""Model registry. Every model is built from the dataset's input shape and class count,
so one config runs on 8x8 digits, 28x28 MNIST or 32x32 CIFAR-10 unchanged, and clients
may use different architectures (knowledge exchange never looks inside a model)."""

from __future__ import annotations

import torch
from torch import nn

from fedkt.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def _flat_size(module: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *shape)).numel())


@MODELS.register("mlp")
class MLP(nn.Module):
    """Two hidden layers; the cheapest model, default for the built-in digits data."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("cnn-small")
class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (16, 32 channels) and a linear head: fast on CPU."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("cnn-fedavg")
class FedAvgCNN(nn.Module):
    """The CNN of McMahan et al. (2017): two 5x5 convs (32, 64), 512-unit dense layer."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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
class ResNet8(nn.Module):
    """A ResNet-8-like net: stem + three basic blocks (16, 32, 64) + global pooling."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layers = nn.Sequential(
            _BasicBlock(width, width, 1), _BasicBlock(width, 2 * width, 2), _BasicBlock(2 * width, 4 * width, 2)
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int | None = None) -> nn.Module:
    """Instantiate architecture ``name``; ``seed`` makes the initial weights reproducible."""
    factory = MODELS.get(name)
    if seed is None:
        return factory(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
