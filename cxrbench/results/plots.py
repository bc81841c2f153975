"""Figures as PNGs (matplotlib, no display): per-class AUROC bars of several runs side by side (like the
reference paper's Figs. 8 and 9) and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def per_class_bars(path: Path, classes: list[str], series: list[tuple[str, dict[str, float | None], bool]],
                   title: str) -> Path:
    """Grouped bars: one group per class, one bar per series (name, class -> AUROC, reported?). Reported
    values are hatched and say so in the legend; undefined values are left out."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(classes) + 2), 4.2), dpi=110)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(classes))
    for i, (name, vals, reported) in enumerate(series):
        ys = [vals.get(c) for c in classes]
        ok = [j for j, v in enumerate(ys) if v is not None]
        ax.bar(x[ok] - 0.4 + width * (i + 0.5), [ys[j] for j in ok], width,
               label=name + (" (reported)" if reported else ""), hatch="//" if reported else None,
               edgecolor="black" if reported else None, linewidth=0.4)
    ax.set_xticks(x, [c.replace("_", " ") for c in classes], rotation=45, ha="right", fontsize=8)
    shown = [v for _, vals, _ in series for v in vals.values() if v is not None]
    ax.set_ylim(min([0.4] + [v - 0.05 for v in shown]), 1.0)  # no bar is cut off
    ax.axhline(0.5, color="gray", lw=0.6, ls=":")
    ax.set_ylabel("test AUROC")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
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
    b.set_ylabel("validation AUROC (weighted)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
