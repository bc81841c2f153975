"""The evaluation's pictures as PNGs (matplotlib, no display): ROC curves with the validation-chosen operating
points, reliability diagrams, and one forest plot of subgroup AUROCs per attribute. Class and group names are
untrusted text: mathtext is off (`plots._plt`), so `$...$` is drawn, never parsed."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np

from cxrbench.metrics.evaluation import roc_points

MARKERS = {"youden": ("o", "#d62728"), "sensitivity": ("^", "#2ca02c"), "specificity": ("s", "#1f77b4")}


def _save(fig, path: Path, root: Path | None) -> Path:
    from cxrbench.files import atomic_open

    with atomic_open(path, root=root) as fh:
        fig.savefig(fh, format="png")
    return path


def _grid(n: int):
    from cxrbench.results.plots import _plt

    plt = _plt()
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.9 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return plt, fig, axes.ravel()


def roc_figure(result: dict, y: np.ndarray, p: np.ndarray):
    """Test ROC per class, the operating points chosen on validation marked where they land on test."""
    classes = result["classes"]
    plt, fig, axes = _grid(len(classes))
    for i, c in enumerate(classes):
        ax = axes[i]
        yy = y[:, i].astype(bool)
        ax.plot([0, 1], [0, 1], color="gray", lw=0.6, ls=":")
        if yy.any() and not yy.all():
            _, tpr, fpr = roc_points(yy, p[:, i])
            ax.plot(np.r_[0, fpr], np.r_[0, tpr], lw=1.2, color="black")
        else:
            ax.text(0.5, 0.5, "no ROC: one label value only", ha="center", fontsize=7)
        for key, op in result["operating_points"][c].items():
            t = op["test"]
            if t["sensitivity"]["value"] is None or t["specificity"]["value"] is None:
                continue
            m, col = MARKERS[op["rule"]]
            ax.plot(1 - t["specificity"]["value"], t["sensitivity"]["value"], m, color=col, ms=6, label=key)
        ax.set_title(c.replace("_", " "), fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.set_xlabel("1 - specificity", fontsize=7)
            ax.set_ylabel("sensitivity", fontsize=7)
        if ax.get_legend_handles_labels()[0] and not any(a.get_legend() for a in axes[:i]):
            ax.legend(fontsize=6, loc="lower right", title="chosen on validation", title_fontsize=6)
    fig.suptitle(f"{result['run_id']}: test ROC, operating points chosen on validation", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.92, wspace=0.3, hspace=0.45)
    return plt, fig


def reliability_figure(result: dict):
    """Reliability diagrams: per equal-width bin, positive rate against mean probability (bar width: the bin;
    the number over a bar: its images), per class and pooled."""
    cal = result["calibration"]
    panels = [*((c, cal["per_class"][c]) for c in result["classes"]), ("all classes pooled", cal["pooled"])]
    plt, fig, axes = _grid(len(panels))
    for ax, (name, e) in zip(axes, panels):
        bins = [b for b in e["reliability"] if b["images"]]
        ax.plot([0, 1], [0, 1], color="gray", lw=0.6, ls=":")
        ax.bar(
            [b["low"] for b in bins],
            [b["positive_rate"] for b in bins],
            width=[b["high"] - b["low"] for b in bins],
            align="edge",
            color="#9ecae1",
            edgecolor="#3182bd",
            lw=0.5,
        )
        ax.plot([b["mean_probability"] for b in bins], [b["positive_rate"] for b in bins], "o", ms=2.5, color="black")
        ece = "n/a" if e["ece"] is None else f"{e['ece']:.3f}"
        ax.set_title(f"{name.replace('_', ' ')}  ECE {ece}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    axes[0].set_xlabel("mean probability", fontsize=7)
    axes[0].set_ylabel("positive rate", fontsize=7)
    fig.suptitle(f"{result['run_id']}: reliability ({cal['bins']} equal-width bins)", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.92, wspace=0.3, hspace=0.45)
    return plt, fig


def forest_figure(result: dict, attribute: str):
    """Subgroup AUROCs with 95% CIs: one row per class and group; groups with too few positives are named."""
    from cxrbench.results.plots import _plt

    plt = _plt()
    sub = result["subgroups"][attribute]
    rows = [(c, g, sub["per_class"][c]["groups"][g]) for c in result["classes"] for g in sub["groups"]]
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.17 * len(rows)), dpi=90)
    labels = []
    lows = [e["auroc"]["ci95"][0] for _, _, e in rows if e["auroc"] and e["auroc"]["ci95"][0] is not None]
    left = min([0.5, *(x - 0.02 for x in lows)])
    for k, (c, g, e) in enumerate(rows):
        ypos = len(rows) - 1 - k
        labels.append(f"{c.replace('_', ' ')} · {g}")
        a = e["auroc"]
        if a is None:
            ax.text(left + 0.005, ypos, "too few", va="center", fontsize=6, color="#777")
            continue
        lo, hi = a["ci95"]
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [ypos, ypos], color="black", lw=0.8)
        ax.plot(a["value"], ypos, "s", color="#d62728", ms=3)
    ax.set_yticks(range(len(rows))[::-1], labels, fontsize=6)
    ax.axvline(0.5, color="gray", lw=0.6, ls=":")
    ax.set_xlim(left, 1.02)
    ax.set_xlabel("test AUROC (95% CI, patient bootstrap)", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(f"{result['run_id']}: AUROC by {attribute}", fontsize=9)
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.32, right=0.97, bottom=0.5 / height, top=1 - 0.35 / height)
    return plt, fig


def draw_all(result: dict, y: np.ndarray, p: np.ndarray, out: Path, root: Path | None) -> dict[str, Path]:
    """Every picture as a PNG in `out`; name -> path (roc, reliability, forest-<attribute index>)."""
    made: dict[str, Path] = {}
    jobs = [("roc", partial(roc_figure, result, y, p)), ("reliability", partial(reliability_figure, result))]
    for k, a in enumerate(result["subgroups"]):
        jobs.append((f"forest-{k}", partial(forest_figure, result, a)))
    for name, make in jobs:
        plt, fig = make()
        try:
            made[name] = _save(fig, out / f"{name}.png", root)
        finally:
            plt.close(fig)
    return made
