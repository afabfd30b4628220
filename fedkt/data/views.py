"""A second view of each transfer sample, for fusions that learn from agreement across
views (SADE). The view is a seeded, label-preserving perturbation: a random translation
of up to ``max_shift`` pixels (edge pixels repeated, so no artificial border appears)
plus Gaussian noise on the normalised inputs. It is derived from the config's seed, so
every process builds the very same second view without any data travelling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augmented_view(
    x: torch.Tensor, generator: torch.Generator, max_shift: int = 2, noise: float = 0.1
) -> torch.Tensor:
    """``x`` (N, C, H, W) shifted per sample by (dy, dx) in [-max_shift, max_shift] and
    perturbed with N(0, noise^2) noise; the same generator state gives the same view."""
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    padded = F.pad(x.float(), (max_shift, max_shift, max_shift, max_shift), mode="replicate")
    out = torch.empty_like(x, dtype=torch.float32)
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero(as_tuple=True)[0]
        top, left = max_shift - dy, max_shift - dx
        out[rows] = padded[rows, :, top : top + h, left : left + w]
    return (out + noise * eps).to(x.dtype)
