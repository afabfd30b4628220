"""Matplotlib figures for a run (headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from fedkt.rounds import RoundRecord


def accuracy_per_round(rounds: Sequence[RoundRecord], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r.round for r in rounds]
    for series, label in (
        ([r.alma for r in rounds], "ALMA (own test split)"),
        ([r.global_accuracy for r in rounds], "global test (mean)"),
        ([r.worst_client_accuracy for r in rounds], "worst client"),
        ([r.local_alma for r in rounds], "after local training"),
    ):
        ys = [np.nan if v is None else v for v in series]
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


def fusion_heatmap(
    weights: np.ndarray, path: Path, title: str = "", clients: list[int] | None = None
) -> None:
    """Row n = the weights client n's target gives to each client m (NaN = absent).
    ``clients``: the partition ids of the rows/columns (default 0..k-1). The figure stays
    at most about 10 inches wide whatever k (1,000 participants make a 1,000 x 1,000
    image, not a 450-inch canvas); ticks and values are drawn only while readable."""
    n = weights.shape[0]
    labels = list(range(n)) if clients is None else list(clients)
    side = min(10.0, 1.2 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    finite = weights[np.isfinite(weights)]
    im = ax.imshow(
        np.ma.masked_invalid(weights),
        cmap="viridis",
        vmin=0,
        vmax=max(float(finite.max()) if finite.size else 0.0, 1e-9),
        interpolation="nearest",
    )
    ax.set_xlabel("teacher client m")
    ax.set_ylabel("receiving client n")
    if n <= 40:
        ax.set_xticks(range(n), labels=[str(c) for c in labels])
        ax.set_yticks(range(n), labels=[str(c) for c in labels])
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if np.isfinite(weights[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{weights[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="w",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _strategy_colors(strategies: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab20" if len(strategies) > 10 else "tab10")
    return {s: cmap(i % cmap.N) for i, s in enumerate(strategies)}


def compare_final(table: dict, strategies: list[str], partitions: list[str], path: Path) -> None:
    """Final ALMA per strategy (mean over seeds) with 95% CI error bars, one group per partition."""
    colors = _strategy_colors(strategies)
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 + 0.35 * len(strategies) * len(partitions)), 4))
    for j, s in enumerate(strategies):
        xs = np.arange(len(partitions)) + (j - (len(strategies) - 1) / 2) * width
        means = [table[p][s]["alma"][0] for p in partitions]
        errs = [
            0 if not np.isfinite(table[p][s]["alma"][2]) else table[p][s]["alma"][2]
            for p in partitions
        ]
        ax.bar(xs, means, width, yerr=errs, capsize=2, label=s, color=colors[s])
    ax.set_xticks(range(len(partitions)))
    ax.set_xticklabels(partitions)
    ax.set_ylabel("final ALMA (mean, 95% CI)")
    lo = np.nanmin([[table[p][s]["alma"][0] for s in strategies] for p in partitions])
    ax.set_ylim(max(0.0, lo - 0.1) if np.isfinite(lo) else 0.0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_rounds(table: dict, strategies: list[str], partitions: list[str], path: Path) -> None:
    colors = _strategy_colors(strategies)
    fig, axes = plt.subplots(
        1, len(partitions), figsize=(5 * len(partitions), 4), squeeze=False, sharey=True
    )
    for ax, p in zip(axes[0], partitions):
        for s in strategies:
            ys = table[p][s]["alma_per_round"]
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=s, color=colors[s])
        ax.set_title(p)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ALMA (mean over seeds)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_bytes(table: dict, strategies: list[str], partitions: list[str], path: Path) -> None:
    """Final ALMA against total bytes communicated (log scale): accuracy per megabyte."""
    colors = _strategy_colors(strategies)
    markers = "osD^v<>px*"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, p in enumerate(partitions):
        for s in strategies:
            t = table[p][s]
            if np.isfinite(t["alma"][0]) and t["mbytes"] > 0:
                ax.scatter(
                    t["mbytes"],
                    t["alma"][0],
                    color=colors[s],
                    marker=markers[i % len(markers)],
                    label=s if i == 0 else None,
                    s=40,
                )
    for i, p in enumerate(partitions):
        ax.scatter([], [], color="gray", marker=markers[i % len(markers)], label=p)
    ax.set_xscale("log")
    ax.set_xlabel("total MB sent + received per run (log)")
    ax.set_ylabel("final ALMA")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_spread(table: dict, strategies: list[str], partitions: list[str], path: Path) -> None:
    """Per-client final accuracy (all seeds pooled): who is left behind by each strategy."""
    fig, axes = plt.subplots(
        1,
        len(partitions),
        figsize=(max(5, 0.5 * len(strategies)) * len(partitions), 4),
        squeeze=False,
        sharey=True,
    )
    for ax, p in zip(axes[0], partitions):
        data = [table[p][s]["client_accuracies"] or [np.nan] for s in strategies]
        ax.boxplot(data, tick_labels=strategies, showmeans=True)
        ax.set_title(p)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("per-client accuracy, final round")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
