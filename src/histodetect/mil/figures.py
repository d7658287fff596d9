"""Report pictures of the slide-label models (Agg, no pyplot state): ROC curves and confusion
matrices of the test bags beside the out-of-fold training bags (torch-free; the most attended
tiles are :mod:`histodetect.mil.top_tiles`).

Both come from ``results/mil/predictions.tsv`` alone: ``label`` (empty: predict only),
``call``, ``prob_<class>`` and ``split`` (``test``; ``train`` rows are out of fold).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from histodetect.slides.pictures import DPI, save_png

PANELS = (("test", "Test bags"), ("train", "Out of fold (training bags)"))


def labelled(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of ``split`` that carry a label."""
    return table[(table.split == split) & (table.label.astype(str) != "")]


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``predictions.tsv`` with ids, labels and calls as text (empty label: predict only)."""
    text = dict.fromkeys(("bag_id", "slides", "label", "call"), str)
    return pd.read_csv(path, sep="\t", dtype=text, keep_default_na=False)


def _roc_panel(ax: Axes, part: pd.DataFrame, classes: list[str], title: str) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    colours = colormaps["tab10"]
    y = part.label.to_numpy(str)
    pairs = [(classes[1], f"prob_{classes[1]}")] if len(classes) == 2 else []
    pairs = pairs or [(c, f"prob_{c}") for c in classes]
    aucs: dict[str, float] = {}
    for i, (cls, column) in enumerate(pairs):
        positive = y == cls
        if 0 < positive.sum() < len(y):
            score = part[column].to_numpy(np.float64)
            fpr, tpr, _ = roc_curve(positive, score)
            auc = float(roc_auc_score(positive, score))
            aucs[cls] = auc
            name = f"{cls} vs rest" if len(pairs) > 1 else f"{cls} (positive)"
            ax.plot(fpr, tpr, color=colours(i % 10), label=f"{name}: AUC {auc:.3f}")
    if aucs:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "one class or no bags: no ROC", ha="center", va="center")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    macro = f", macro AUC {np.mean(list(aucs.values())):.3f}" if len(aucs) > 1 else ""
    ax.set_title(f"{title} (n={len(part)}){macro}", fontsize=10)
    return aucs


def roc_png(
    table: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike[str]
) -> dict[str, dict[str, float]]:
    """One-vs-rest ROC per class (binary: the positive class) of the test bags, and of the
    training bags out of fold beside them; returns the curves' AUCs by split and class."""
    fig = Figure(figsize=(10, 4.8), dpi=DPI)
    aucs = {}
    for ax, (split, title) in zip(fig.subplots(1, 2), PANELS, strict=True):
        aucs[split] = _roc_panel(ax, labelled(table, split), [str(c) for c in classes], title)
    fig.tight_layout()
    save_png(fig, path)
    return aucs


def confusion(part: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """``(K, K)`` counts, rows the label, columns the call."""
    index = {str(c): i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), int)
    np.add.at(matrix, (part.label.map(index).to_numpy(int), part.call.map(index).to_numpy(int)), 1)
    return matrix


def confusion_png(
    table: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Confusion matrices (counts; rows: label, columns: call) of the test bags and, out of
    fold, of the training bags."""
    names = [str(c) for c in classes]
    side = 2.2 + 0.45 * len(names)
    fig = Figure(figsize=(2 * side + 0.8, side), dpi=DPI)
    for ax, (split, title) in zip(fig.subplots(1, 2), PANELS, strict=True):
        part = labelled(table, split)
        matrix = confusion(part, names)
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
        top = matrix.max() or 1
        for (r, c), n in np.ndenumerate(matrix):
            colour = "white" if n > top / 2 else "black"
            ax.text(c, r, str(n), ha="center", va="center", color=colour, fontsize=9)
        ticks = range(len(names))
        ax.set_xticks(ticks, names)
        ax.set_yticks(ticks, names)
        ax.set(xlabel="Call", ylabel="Label")
        correct = int(np.trace(matrix))
        ax.set_title(f"{title}: {correct} of {len(part)} right", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
