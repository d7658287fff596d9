"""Cohort figures: ROC and FROC curves and per-fold training curves (Agg, no pyplot state)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from histodetect.detection.overlay import DPI, save_png
from histodetect.evaluation.detection_metrics import FROC_FPS


def roc_png(y_true: ArrayLike, y_score: ArrayLike, path: str | os.PathLike[str]) -> None:
    """Save the ROC curve of tile scores (with AUC) as PNG."""
    from sklearn.metrics import roc_auc_score, roc_curve

    t = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    fig = Figure(figsize=(5, 5), dpi=DPI)
    ax = fig.add_subplot()
    if len(np.unique(t)) == 2:
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, color="tab:blue", label=f"AUC = {roc_auc_score(t, s):.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "single class: no ROC", ha="center", va="center")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title("ROC (tiles)")
    fig.tight_layout()
    save_png(fig, path)


def froc_png(fps: ArrayLike, sens: ArrayLike, path: str | os.PathLike[str]) -> None:
    """Save an FROC curve (sensitivity vs average false positives per slide) as PNG."""
    x = np.asarray(fps, dtype=np.float64)
    y = np.asarray(sens, dtype=np.float64)
    fig = Figure(figsize=(6, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    xmax = max(8.5, float(x.max()) if x.size else 0.0)
    if x.size:
        ux = np.unique(x)
        uy = np.array([y[x == v].max() for v in ux])
        ax.plot(np.r_[ux, xmax], np.r_[uy, uy[-1]], color="tab:red", linewidth=1.5)
        ax.plot(FROC_FPS, np.interp(FROC_FPS, ux, uy), "o", color="black", markersize=4)
    ax.set(xlabel="Average false positives per slide", ylabel="Sensitivity", ylim=(0, 1.02))
    ax.set_xlim(0, xmax)
    ax.set_xticks([0, 1, 2, 4, 8])
    ax.grid(True, alpha=0.3)
    ax.set_title("FROC")
    fig.tight_layout()
    save_png(fig, path)


def training_curves_png(curves: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Save per-epoch loss (train solid, validation dashed) and validation AUC of each fold.

    ``curves`` has columns fold, tag, epoch, value (see
    :func:`histodetect.evaluation.cohort.read_training_curves`).
    """
    fig = Figure(figsize=(11, 4.2), dpi=DPI)
    loss_ax, auc_ax = fig.subplots(1, 2)
    folds = sorted(curves["fold"].unique()) if len(curves) else []
    colours = colormaps["tab10"]
    for i, fold in enumerate(folds):
        part = curves[curves["fold"] == fold]
        for tag, ax, style in (
            ("train_loss", loss_ax, "-"),
            ("val_loss", loss_ax, "--"),
            ("val_auc", auc_ax, "-"),
        ):
            line = part[part["tag"] == tag]
            if len(line):
                label = f"{fold} {tag.replace('_', ' ')}"
                ax.plot(line.epoch, line.value, style, marker="o", ms=3, color=colours(i % 10), label=label)  # fmt: skip
    if not folds:
        loss_ax.text(0.5, 0.5, "no training curves found", ha="center", va="center")
    loss_ax.set(xlabel="Epoch", ylabel="Loss", title="Loss (train solid, validation dashed)")
    auc_ax.set(xlabel="Epoch", ylabel="Validation AUC", title="Validation tile AUC", ylim=(0, 1.02))
    for ax in (loss_ax, auc_ax):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
