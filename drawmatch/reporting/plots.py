"""Figures for the report and the notebooks, drawn with matplotlib's Agg backend (no display).

Each function returns a matplotlib Figure; `png` turns one into PNG bytes and closes it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DPI = 110
COLOURS = ["#1f5f8b", "#c45a22", "#3b8b3b", "#8b3b7a", "#7a6a1f", "#2f8b8b", "#8b2f2f", "#555555"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    value_label: str,
    horizontal: bool = False,
) -> Any:
    """Bars with their counts written on them; horizontal bars read top to bottom (ranked)."""
    plt = _pyplot()
    n = len(labels)
    if horizontal:
        fig, ax = plt.subplots(figsize=(7.5, max(2.0, 0.32 * n + 1.0)))
        y = np.arange(n)
        ax.barh(y, values, color=COLOURS[0])
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel(value_label)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:g}", va="center", fontsize=8)
        ax.margins(x=0.12)
    else:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * n + 1.5), 3.6))
        x = np.arange(n)
        ax.bar(x, values, color=COLOURS[0])
        ax.set_xticks(x, labels, rotation=60 if n > 8 else 0, ha="right" if n > 8 else "center")
        ax.set_ylabel(value_label)
        for xi, v in zip(x, values):
            ax.text(xi, v, f"{v:g}", ha="center", va="bottom", fontsize=8)
        ax.margins(y=0.12)
    (ax.xaxis if horizontal else ax.yaxis).get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def box_plot(
    groups: Mapping[str, Sequence[float]], title: str, value_label: str, note: str = ""
) -> Any:
    """One box per group (median, quartiles, 1.5 IQR whiskers, outliers as dots), with the
    individual values drawn over it and each group's mean marked by a diamond."""
    plt = _pyplot()
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(names) + 2), 4.2))
    data = [np.asarray(groups[n], dtype=float) for n in names]
    ax.boxplot(data, showmeans=True, meanprops={"marker": "D", "markerfacecolor": "white"})
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        jitter = rng.uniform(-0.12, 0.12, size=values.size)
        ax.scatter(np.full(values.size, i) + jitter, values, s=9, alpha=0.45, color=COLOURS[0])
    ax.set_xticks(range(1, len(names) + 1), [_wrap(n, 28) for n in names], fontsize=8)
    ax.set_ylabel(value_label)
    ax.set_title(title)
    if note:
        ax.text(0.0, -0.28, note, transform=ax.transAxes, fontsize=8, va="top")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> Any:
    """Per-epoch training loss, validation MAP and mining share of each run, one line per run
    (epochs 1-based on the axis; the best epoch of each run is circled by the caller's data)."""
    plt = _pyplot()
    panels = [
        ("train_loss", "training loss"),
        ("val_MAP", "validation MAP (%)"),
        ("mining_share", "mining share of a step"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for (key, label), ax in zip(panels, axes):
        for i, (name, history) in enumerate(histories.items()):
            epochs = [int(h["epoch"]) + 1 for h in history if key in h]
            values = [float(h[key]) for h in history if key in h]
            colour = COLOURS[i % len(COLOURS)]
            ax.plot(epochs, values, marker="o", ms=3, color=colour, label=name)
        ax.set_xlabel("epoch (1 = first)")
        ax.set_title(label)
        ax.spines[["top", "right"]].set_visible(False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            [_wrap(label, 60) for label in labels],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(2, len(labels)),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> str:
    """Break a long name (ids have no spaces) into lines of at most `width` characters."""
    lines = [
        line[i : i + width] for line in text.split("\n") for i in range(0, max(len(line), 1), width)
    ]
    return "\n".join(lines)


def image_grid(rows: Mapping[str, Sequence[tuple[str, Any]]], size: float = 1.7) -> Any:
    """Rows of images, each row titled (e.g. an age group) and each image captioned (its id):
    `rows` maps a row title to (caption, PIL image) pairs."""
    plt = _pyplot()
    columns = max([len(r) for r in rows.values()] + [1])
    fig, axes = plt.subplots(
        max(len(rows), 1), columns, figsize=(size * columns, (size + 0.5) * max(len(rows), 1))
    )
    grid = np.atleast_2d(np.asarray(axes, dtype=object).reshape(max(len(rows), 1), columns))
    for r, (title, items) in enumerate(rows.items()):
        for c in range(columns):
            ax = grid[r, c]
            ax.axis("off")
            if c < len(items):
                caption, image = items[c]
                ax.imshow(image)
                ax.set_title(_wrap(caption, 22), fontsize=7)
        grid[r, 0].text(
            -0.08, 0.5, title, transform=grid[r, 0].transAxes, rotation=90, va="center", ha="right"
        )
    fig.tight_layout()
    return fig


def confusion_figure(confusion: np.ndarray, labels: Sequence[str], title: str) -> Any:
    """A confusion matrix (rows: true label, columns: predicted label): cells coloured by the
    share of their row (recall on the diagonal), each with its count; labels on both axes."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true label's images")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    return fig
