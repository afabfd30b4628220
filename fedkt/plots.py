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
    from fedkt.report import Row
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
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    save(fig, path)


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
    fig.colorbar(im, ax=ax, fraction=0.046, label="fusion weight w_nm")
    ax.set_title(title, fontsize=9)
    save(fig, path)


# Ten clearly distinct hues, then black and greys; every strategy also gets its own marker,
# so neighbouring strategies stay apart in print and for colour-blind readers.
_PALETTE = [plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "dimgray", "darkgray"]
_MARKERS = "osD^v<>pXh*P"


def _style(strategies: list[str]) -> dict[str, tuple[Any, str]]:
    return {
        s: (_PALETTE[i % len(_PALETTE)], _MARKERS[i % len(_MARKERS)])
        for i, s in enumerate(strategies)
    }


def _strategies(table: dict[str, dict[str, Row]]) -> list[str]:
    return list(dict.fromkeys(s for rows in table.values() for s in rows))


def save(fig: Any, path: Path) -> None:
    """``path`` as PNG (for the report) and PDF (vector, for papers)."""
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=150)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def compare_final(table: dict[str, dict[str, Row]], path: Path, chance: float) -> None:
    """Final ALMA per strategy (mean over seeds) with its 95% CI, one group per partition
    setting, on the full [0, 1] scale with chance marked; whiskers are clipped to [0, 1]."""
    strategies, partitions = _strategies(table), list(table)
    style = _style(strategies)
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.32 * len(strategies) * len(partitions)), 4.2))
    for j, s in enumerate(strategies):
        xs = np.arange(len(partitions)) + (j - (len(strategies) - 1) / 2) * width
        means = np.array([table[p][s].alma[0] if s in table[p] else np.nan for p in partitions])
        half = np.array([table[p][s].alma[2] if s in table[p] else np.nan for p in partitions])
        half = np.where(np.isfinite(half), half, 0.0)
        err = np.vstack(
            [np.minimum(half, np.nan_to_num(means)), np.minimum(half, 1 - np.nan_to_num(means))]
        )
        ax.bar(
            xs,
            means,
            width,
            yerr=err,
            capsize=2,
            label=s,
            color=style[s][0],
            edgecolor="white",
            lw=0.3,
        )
    ax.axhline(chance, color="gray", ls="--", lw=0.8, label=f"chance ({100 * chance:.0f}%)")
    ax.set_xticks(range(len(partitions)), labels=partitions)
    ax.set_ylabel("final ALMA (mean over seeds, 95% CI)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, path)


def compare_rounds(table: dict[str, dict[str, Row]], path: Path) -> None:
    """ALMA per round, mean over seeds with a 95% CI band, one panel per partition."""
    from matplotlib.ticker import MaxNLocator

    strategies, partitions = _strategies(table), list(table)
    style = _style(strategies)
    fig, axes = plt.subplots(
        1, len(partitions), figsize=(4.8 * len(partitions), 4), squeeze=False, sharey=True
    )
    for ax, p in zip(axes[0], partitions):
        for s in strategies:
            row = table[p].get(s)
            if row is None or not row.alma_per_round:
                continue
            ys = np.array(row.alma_per_round, dtype=float)
            half = np.nan_to_num(np.array(row.alma_per_round_ci, dtype=float))
            xs = np.arange(1, len(ys) + 1)
            color, marker = style[s]
            ax.plot(xs, ys, marker=marker, ms=3, lw=1.2, label=s, color=color)
            ax.fill_between(
                xs,
                np.clip(ys - half, 0, 1),
                np.clip(ys + half, 0, 1),
                color=color,
                alpha=0.12,
                lw=0,
            )
        ax.set_title(p)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ALMA (mean over seeds, 95% CI band)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, path)


def compare_bytes(table: dict[str, dict[str, Row]], path: Path) -> None:
    """Final ALMA against MB communicated per run (log scale). Strategies that send the
    same bytes are spread sideways a little and labelled, so none hides another."""
    strategies, partitions = _strategies(table), list(table)
    style = _style(strategies)
    fig, axes = plt.subplots(
        1, len(partitions), figsize=(5.2 * len(partitions), 4.4), squeeze=False, sharey=True
    )
    for ax, p in zip(axes[0], partitions):
        points = [
            (s, r.mbytes, r.alma[0])
            for s, r in table[p].items()
            if np.isfinite(r.alma[0]) and r.mbytes > 0
        ]
        groups: dict[float, list[str]] = {}
        for s, mb, _ in points:
            groups.setdefault(round(float(np.log10(mb)), 2), []).append(s)
        for s, mb, alma in points:
            group = groups[round(float(np.log10(mb)), 2)]
            k = group.index(s) - (len(group) - 1) / 2
            x = mb * 10 ** (0.035 * k)
            color, marker = style[s]
            ax.scatter(x, alma, color=color, marker=marker, s=36, zorder=3)
            ax.annotate(
                s, (x, alma), textcoords="offset points", xytext=(4, 3), fontsize=6.5, color=color
            )
        ax.set_xscale("log")
        ax.set_title(p)
        ax.set_xlabel("MB sent + received per run (log)")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("final ALMA (mean over seeds)")
    save(fig, path)


def compare_spread(table: dict[str, dict[str, Row]], path: Path, chance: float) -> None:
    """Per-client final accuracy, all seeds pooled: who each strategy leaves behind."""
    from matplotlib.lines import Line2D

    strategies, partitions = _strategies(table), list(table)
    fig, axes = plt.subplots(
        1,
        len(partitions),
        figsize=(max(5.0, 0.55 * len(strategies)) * len(partitions), 4.2),
        squeeze=False,
        sharey=True,
    )
    for ax, p in zip(axes[0], partitions):
        data = [
            table[p][s].client_accuracies or [np.nan] if s in table[p] else [np.nan]
            for s in strategies
        ]
        ax.boxplot(
            data,
            tick_labels=strategies,
            showmeans=True,
            meanprops={"marker": "^", "markerfacecolor": "tab:green"},
        )
        ax.axhline(chance, color="gray", ls="--", lw=0.8)
        ax.set_title(p)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.set_ylim(0.0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("per-client accuracy, final round")
    legend = [
        Line2D([], [], color="tab:orange", label="median"),
        Line2D([], [], marker="^", ls="", color="tab:green", label="mean"),
        Line2D([], [], color="gray", ls="--", label="chance"),
    ]
    axes[0][-1].legend(
        handles=legend,
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="box: quartiles,\nwhiskers: 1.5 IQR",
        title_fontsize=7,
    )
    save(fig, path)


def compare_fusion(table: dict[str, dict[str, Row]], path: Path) -> None:
    """Who learned from whom: each personalised fusion's weights (uniform ones, identical
    for every client, are left out), averaged over rounds and seeds, one heat map per
    strategy and partition setting (rows: receiving client)."""
    panels = [
        (p, s, r.fusion)
        for p, rows in table.items()
        for s, r in rows.items()
        if r.fusion is not None and np.nanmax(r.fusion) - np.nanmin(r.fusion) > 1e-6  # not uniform
    ]
    if not panels:
        return
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.4 * nrows), squeeze=False)
    fig.subplots_adjust(hspace=0.55, wspace=0.35)
    im = None
    for ax, (p, s, w) in zip(axes.flat, panels):
        im = ax.imshow(w, vmin=0.0, vmax=1.0, cmap="viridis")
        sw = np.nanmean(np.diag(w))
        ax.set_title(f"{s} / {p}\nmean self-weight {sw:.2f}", fontsize=8)
        ax.set_xlabel("teacher m", fontsize=7)
        ax.set_ylabel("receiver n", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(
            im, ax=axes, fraction=0.025, label="fusion weight w_nm (mean over rounds, seeds)"
        )
    fig.savefig(path.with_suffix(".png"), dpi=150, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
