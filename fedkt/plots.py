"""Matplotlib figures for a run (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_per_round(rounds: list[dict[str, Any]], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["round"] for r in rounds]
    for key, label in (("alma", "ALMA (own test split)"), ("global_accuracy", "global test (mean)"),
                       ("worst_client_accuracy", "worst client"), ("local_alma", "after local training")):
        ys = [np.nan if r.get(key) is None else r[key] for r in rounds]
        if not all(np.isnan(ys)):
            ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fusion_heatmap(weights: np.ndarray, path: Path, title: str = "") -> None:
    """Row n = the weights client n's target gives to each client m (NaN = absent)."""
    n = weights.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 0.8 + 0.45 * n))
    im = ax.imshow(np.ma.masked_invalid(weights), cmap="viridis", vmin=0, vmax=max(np.nanmax(weights), 1e-9))
    ax.set_xlabel("teacher client m")
    ax.set_ylabel("receiving client n")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if np.isfinite(weights[i, j]):
                    ax.text(j, i, f"{weights[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
