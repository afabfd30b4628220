"""Client-side knowledge: what a client shares, and the server's check of what arrives.

Knowledge is architecture-independent by construction (class probabilities on the
shared transfer set), which is what lets heterogeneous models learn from each other.
"""

from __future__ import annotations

import numpy as np
import torch

from fedkt.errors import KnowledgeError
from fedkt.registry import Registry

KNOWLEDGE: Registry["Knowledge"] = Registry("knowledge")


class Knowledge:
    """Base class: ``extract`` runs on the client, ``validate`` on the server."""

    def extract(self, model: torch.nn.Module, transfer_x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def validate(self, array: np.ndarray, num_samples: int, num_classes: int) -> np.ndarray:
        raise NotImplementedError


@KNOWLEDGE.register("soft_labels")
class SoftLabels(Knowledge):
    """p_n(x) = softmax(z_n(x) / T) on every transfer sample, as float32 (M, C)."""

    def __init__(self, temperature: float = 1.0, batch_size: int = 512) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def extract(self, model: torch.nn.Module, transfer_x: torch.Tensor) -> np.ndarray:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(transfer_x), self.batch_size):
            xb = transfer_x[start : start + self.batch_size].to(device)
            out.append(torch.softmax(model(xb).float() / self.temperature, dim=-1).cpu())
        model.train(was_training)
        return torch.cat(out).numpy().astype(np.float32)

    def validate(self, array: np.ndarray, num_samples: int, num_classes: int) -> np.ndarray:
        """Reject anything that is not an (M, C) array of finite probabilities summing to 1."""
        arr = np.asarray(array)
        if arr.shape != (num_samples, num_classes):
            raise KnowledgeError(
                f"soft labels have shape {arr.shape}, expected ({num_samples}, {num_classes})"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise KnowledgeError(f"soft labels have dtype {arr.dtype}, expected a float type")
        if not np.isfinite(arr).all():
            raise KnowledgeError("soft labels contain NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0 + 1e-4:
            raise KnowledgeError("soft labels contain values outside [0, 1]")
        if not np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
            raise KnowledgeError("soft labels do not sum to one per sample")
        return arr.astype(np.float32, copy=False)
