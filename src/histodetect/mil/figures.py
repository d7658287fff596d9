"""Report pictures of the slide-label models (Agg, no pyplot state): ROC curves and confusion
matrices (a numeric label: predicted against true; survival: Kaplan-Meier curves of the risk
groups) of the test bags beside the out-of-fold
training bags, or of the out-of-fold bags
alone where no test bag carries a label (``split.test_fraction: 0``, as small cohorts are run)
(torch-free; the most attended tiles are :mod:`histodetect.mil.top_tiles`).

Both come from ``results/mil/predictions.tsv`` alone: ``label`` (empty: predict only),
``call``, ``prob_<class>`` and ``split`` (``test``; ``train`` rows are out of fold).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from histodetect.mil.survival_metrics import logrank_p
from histodetect.slides.pictures import DPI, TITLE_PAD_PX, save_png, wrap_px

PANELS = (("test", "Test bags"), ("train", "Out of fold (training bags)"))


def labelled(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of ``split`` that carry a label."""
    return table[(table.split == split) & (table.label.astype(str) != "")]


def panels(table: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """The :data:`PANELS` to draw: both, or out of fold alone when no test bag carries a
    label (every bag out of fold: an empty test panel would only mislead)."""
    return PANELS if len(labelled(table, "test")) else PANELS[1:]


def scatter_png(table: pd.DataFrame, path: str | os.PathLike[str]) -> dict[str, int]:
    """Predicted against true number (``mil.task: regression``) of the test bags beside the
    training bags out of fold (alone without labelled test bags: :func:`panels`), with the
    identity line; returns the bags drawn per split."""
    shown = panels(table)
    fig = Figure(figsize=(0.4 + 4.8 * len(shown), 4.8), dpi=DPI)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    drawn = {}
    for ax, (split, title) in zip(axes, shown, strict=True):
        part = labelled(table, split)
        y, pred = part.target.to_numpy(float), part.prediction.to_numpy(float)
        drawn[split] = len(part)
        ax.scatter(y, pred, s=14, alpha=0.7)
        both = np.concatenate([y, pred]) if len(part) else np.array([0.0, 1.0])
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel="True", ylabel="Predicted")
        mae = f", MAE {np.abs(pred - y).mean():.3g}" if len(part) else ""
        _panel_title(ax, f"{title} (n={len(part)}){mae}", len(shown))
    fig.tight_layout()
    save_png(fig, path)
    return drawn


GROUP_COLOURS = {"low": "tab:blue", "mid": "tab:orange", "high": "tab:red"}


def km_png(
    table: pd.DataFrame, path: str | os.PathLike[str], metrics: dict[str, Any] | None = None
) -> dict[str, float]:
    """Kaplan-Meier curves (lifelines) of the risk groups (``mil.task: survival``; cut out of
    fold, ``metrics["risk_groups"]``, lowest risk first) of the test bags beside the training
    bags out of fold (alone without labelled test bags: :func:`panels`), censorings marked,
    the number at risk under each panel at the time ticks, time in ``metrics["time_unit"]``;
    each panel titled with its bags, events and the log-rank p of its groups
    (:func:`~histodetect.mil.survival_metrics.logrank_p`); returns the p per split."""
    metrics = metrics or {}
    shown = panels(table)
    names = metrics.get("risk_groups", {}).get("names") or sorted(
        set(table.risk_group.astype(str)) - {""}, key=lambda g: ("low", "mid", "high").index(g)
        if g in ("low", "mid", "high") else 3
    )  # fmt: skip
    colours = {g: GROUP_COLOURS.get(g, colormaps["viridis"](i / max(len(names) - 1, 1)))
               for i, g in enumerate(names)}  # fmt: skip
    unit = metrics.get("time_unit") or "time units"
    height = 4.8 + 0.2 * len(names)
    fig = Figure(figsize=(0.6 + 5.0 * len(shown), height), dpi=DPI)
    grid = fig.subplots(2, len(shown), squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [4.0, 0.5 + 0.25 * len(names)]})  # fmt: skip
    found = {}
    for i, (split, title) in enumerate(shown):
        ax, below = grid[0, i], grid[1, i]
        part = labelled(table, split).rename(columns={"time": "target"})
        part = part.assign(target=pd.to_numeric(part.target), event=pd.to_numeric(part.event))
        fitted = _km_curves(ax, part, names, colours)
        found[split] = logrank_p(part)
        ax.set(ylabel="Survival", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, loc="lower left")
        p = "n/a" if not np.isfinite(found[split]) else f"{found[split]:.3g}"
        _panel_title(ax, f"{title} (n={len(part)}, {_events(part)}), log-rank p {p}", len(shown))
        _at_risk(below, fitted, colours, ax.get_xlim())
        below.set_xlabel(f"Time ({unit})")
    fig.tight_layout()
    save_png(fig, path)
    return found


def _km_curves(
    ax: Axes, part: pd.DataFrame, names: Sequence[str], colours: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Each group's Kaplan-Meier step curve and censoring marks on ``ax``; returns the
    groups' times (for the numbers at risk)."""
    fitted = {}
    for group in names:
        rows = part[part.risk_group == group]
        if rows.empty:
            continue
        km = KaplanMeierFitter().fit(rows.target, rows.event)
        curve = km.survival_function_.iloc[:, 0]
        ax.step(curve.index, curve.to_numpy(), where="post", color=colours[group],
                label=f"{group} risk (n={len(rows)}, {_events(rows)})")  # fmt: skip
        censored = rows.target[rows.event == 0].to_numpy(float)
        ax.plot(censored, km.survival_function_at_times(censored).to_numpy(), "|",
                color=colours[group], markersize=7)  # fmt: skip
        fitted[group] = rows.target.to_numpy(float)
    return fitted


def _events(part: pd.DataFrame) -> str:
    n = int(part.event.sum())
    return f"{n} event" + ("" if n == 1 else "s")


def _at_risk(
    ax: Axes, fitted: dict[str, np.ndarray], colours: dict[str, Any], xlim: tuple[float, float]
) -> None:
    """The number at risk (time not yet passed) of each group at the time ticks of ``ax``."""
    ticks = [t for t in ax.get_xticks() if xlim[0] <= t <= xlim[1]]
    ax.set_xticks(ticks)
    ax.set_xlim(xlim)
    ax.set_ylim(len(fitted) - 0.5, -0.5 - 0.8)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.text(0.0, -0.5 - 0.4, "Number at risk", transform=ax.get_yaxis_transform(),
            fontsize=8, va="center", ha="left")  # fmt: skip
    for row, (group, times) in enumerate(fitted.items()):
        ax.text(-0.01, row, group, transform=ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=8, color=colours[group])  # fmt: skip
        for t in ticks:
            ax.text(t, row, str(int((times >= t).sum())), ha="center", va="center", fontsize=8)


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``predictions.tsv`` with ids, labels and calls as text (empty label: predict only)."""
    text = dict.fromkeys(("bag_id", "slides", "label", "call"), str)
    return pd.read_csv(path, sep="\t", dtype=text, keep_default_na=False)


def _panel_title(ax: Axes, text: str, n_panels: int) -> None:
    """``text`` over ``ax``, wrapped to its share of the figure's width (one of ``n_panels``)."""
    width = ax.get_figure().bbox.width / n_panels - 2 * TITLE_PAD_PX
    ax.set_title(wrap_px(text, width, 10), fontsize=10)


def _roc_panel(
    ax: Axes, part: pd.DataFrame, classes: list[str], title: str, n_panels: int
) -> dict[str, float]:
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
    _panel_title(ax, f"{title} (n={len(part)}){macro}", n_panels)
    return aucs


def roc_png(
    table: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike[str]
) -> dict[str, dict[str, float]]:
    """One-vs-rest ROC per class (binary: the positive class) of the test bags, and of the
    training bags out of fold beside them (alone without labelled test bags: :func:`panels`);
    returns the curves' AUCs by split drawn and class."""
    shown = panels(table)
    fig = Figure(figsize=(0.4 + 4.8 * len(shown), 4.8), dpi=DPI)
    aucs = {}
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, (split, title) in zip(axes, shown, strict=True):
        part = labelled(table, split)
        aucs[split] = _roc_panel(ax, part, [str(c) for c in classes], title, len(shown))
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
    fold, of the training bags (alone without labelled test bags: :func:`panels`)."""
    names = [str(c) for c in classes]
    shown = panels(table)
    side = 2.2 + 0.45 * len(names)
    fig = Figure(figsize=(len(shown) * (side + 0.4), side), dpi=DPI)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, (split, title) in zip(axes, shown, strict=True):
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
        _panel_title(ax, f"{title}: {correct} of {len(part)} right", len(shown))
    fig.tight_layout()
    save_png(fig, path)
