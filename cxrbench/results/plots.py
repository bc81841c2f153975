"""Figures as PNGs (matplotlib, no display): per-class AUROC bars of several runs side by side (like the
reference paper's Figs. 8 and 9) and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["text.parse_math"] = False  # names are untrusted text: `$...$` is drawn, never parsed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save through cxrbench.files: an exclusive temporary and a rename (a link planted at the temporary or
    at `path` is replaced, never written through)."""
    from cxrbench.files import atomic_open, make_dirs

    make_dirs(path.parent)
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png")
    return path


def bars_figure(classes: list[str], series: list[tuple[str, dict[str, float | None], bool]], title: str):
    """The figure of `per_class_bars` (returned for inspection): (figure, axes, legend, bar containers)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(classes) + 2) + 2.6, 4.2), dpi=110)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(classes))
    shown = [v for _, vals, _ in series for v in vals.values() if v is not None]
    bottom = min([0.4] + [v - 0.05 for v in shown])  # no bar is cut off
    containers = []
    for i, (name, vals, reported) in enumerate(series):
        ys = [vals.get(c) for c in classes]
        ok = [j for j, v in enumerate(ys) if v is not None]
        pos = x - 0.4 + width * (i + 0.5)
        containers.append(
            ax.bar(
                pos[ok],
                [ys[j] for j in ok],
                width,
                label=name + (" (reported)" if reported else ""),
                hatch="//" if reported else None,
                edgecolor="black" if reported else None,
                linewidth=0.4,
            )
        )
        for j, v in enumerate(ys):
            if v is None:  # no AUROC: no positive test image of the class (or the source reports none)
                ax.text(pos[j], bottom + 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#555")
    ax.set_xticks(x, [c.replace("_", " ") for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(bottom, 1.0)
    ax.axhline(0.5, color="gray", lw=0.6, ls=":")
    ax.set_ylabel("test AUROC")
    ax.set_title(title, fontsize=10)
    # outside the axes, so that it covers no bar
    legend = ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        title="n/a: no AUROC (no positive\ntest image, or none reported)",
        title_fontsize=6,
    )
    fig.tight_layout()
    return fig, ax, legend, containers


def per_class_bars(
    path: Path, classes: list[str], series: list[tuple[str, dict[str, float | None], bool]], title: str
) -> Path:
    """Grouped bars: one group per class, one bar per series (name, class -> AUROC, reported?). Reported
    values are hatched and say so in the legend; an undefined value is written "n/a"; the legend sits beside
    the axes."""
    plt = _plt()
    fig, *_ = bars_figure(classes, series, title)
    _save(fig, path)
    plt.close(fig)
    return path


def training_curves(path: Path, runs: list[tuple[str, list[dict]]], title: str) -> Path:
    """Training loss (left) and validation AUROC (right) per epoch, one line per run (its first training)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for name, hist in runs:
        ep = [h["epoch"] + 1 for h in hist]
        a.plot(ep, [h["train_loss"] for h in hist], marker="o", ms=3, label=name)
        val = [(h["epoch"] + 1, h["val_weighted_auroc"]) for h in hist if h.get("val_weighted_auroc") is not None]
        if val:
            b.plot(*zip(*val), marker="o", ms=3, label=name)
    a.set_xlabel("epoch")
    a.set_ylabel("mean training loss")
    b.set_xlabel("epoch")
    b.set_ylabel("validation AUROC (weighted, reported)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
