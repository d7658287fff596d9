"""Tile classification scores: AUC, F1, precision, recall, (balanced) accuracy, per class.

Pure functions of labels and probabilities (NumPy and scikit-learn only), used to validate each
epoch, to write a fold's ``metrics.json`` and to choose decision rules out of fold: the binary
threshold, or the class priors that multi-class probabilities are divided by, with the best
balanced accuracy.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np


def _skm() -> Any:
    """``sklearn.metrics``, imported when first used (1.3 s; the box step's jobs need none)."""
    from sklearn import metrics

    return metrics


def at_decision(metrics: dict[str, float], how: str) -> dict[str, float]:
    """Threshold-free metrics (``auc*``) as they are, the others suffixed ``_at_<how>``."""
    return {k if k.startswith("auc") else f"{k}_at_{how}": v for k, v in metrics.items()}


def binary_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` holds a single class."""
    return float(_skm().roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def metric_key(name: str) -> str:
    """A class name usable in metric and parameter names."""
    return re.sub(r"[^\w.-]", "_", name)


def multiclass_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC AUC weighted by class size; NaN unless every class occurs in ``y``."""
    if len(np.unique(y)) != probs.shape[1]:
        return float("nan")
    return float(_skm().roc_auc_score(y, probs, multi_class="ovr", average="weighted"))


def multiclass_metrics(
    y: np.ndarray, probs: np.ndarray, classes: list[str], priors: np.ndarray | None = None
) -> dict[str, float]:
    """Weighted AUC, F1, precision, recall, accuracy, balanced accuracy, and per-class values.

    The prediction is the most probable class, or with ``priors`` the class of largest
    ``p / prior`` (:func:`prior_corrected`); per-class AUC is one-vs-rest.
    """
    y_true, y_pred = np.asarray(y).astype(int), prior_corrected(probs, priors)
    labels = list(range(len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"auc": multiclass_auc(y_true, probs)}
        for avg in ("weighted", None):
            p, r, f, _ = _skm().precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0
            )
            if avg is not None:
                out |= {"f1": float(f), "precision": float(p), "recall": float(r)}
                out["accuracy"] = float(_skm().accuracy_score(y_true, y_pred))
                out["balanced_accuracy"] = float(_skm().balanced_accuracy_score(y_true, y_pred))
                continue
            for k, name in enumerate(classes):
                key = metric_key(name)
                out[f"auc_{key}"] = binary_auc(y_true == k, probs[:, k])
                out |= {f"f1_{key}": float(f[k]), f"precision_{key}": float(p[k])}
                out[f"recall_{key}"] = float(r[k])
    return out


def patch_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Tile-level AUC, F1, precision, recall, accuracy and balanced accuracy."""
    y_true, y_pred = np.asarray(y).astype(int), (np.asarray(p) >= threshold).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "auc": binary_auc(y_true, p),
            "f1": float(_skm().f1_score(y_true, y_pred, zero_division=0)),
            "precision": float(_skm().precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(_skm().recall_score(y_true, y_pred, zero_division=0)),
            "accuracy": float(_skm().accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(_skm().balanced_accuracy_score(y_true, y_pred)),
        }


def prior_corrected(probs: np.ndarray, priors: np.ndarray | None = None) -> np.ndarray:
    """The class of largest ``probs / priors`` per row (plain argmax without ``priors``)."""
    probs = np.asarray(probs, np.float64)
    if priors is None:
        return probs.argmax(axis=1)
    return (probs / np.asarray(priors, np.float64)).argmax(axis=1)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean recall over the classes ``0..k-1`` present in ``y`` (as scikit-learn's)."""
    y, pred = np.asarray(y).astype(int), np.asarray(pred).astype(int)
    n = np.bincount(y, minlength=k)
    hit = np.bincount(y[y == pred], minlength=k)
    present = n > 0
    return float((hit[present] / n[present]).mean()) if present.any() else float("nan")


def best_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the best balanced accuracy, midway between neighbouring scores.

    A row is positive when ``score >= threshold``; the lowest threshold wins ties.
    """
    y, scores = np.asarray(y).astype(bool), np.asarray(scores, np.float64)
    values, first = np.unique(scores, return_inverse=True)
    pos = np.bincount(first[y], minlength=len(values))
    neg = np.bincount(first[~y], minlength=len(values))
    tp = pos[::-1].cumsum()[::-1]  # positives at or above each value
    tn = neg.cumsum() - neg  # negatives below it
    rates = [r for r in (tp / y.sum() if y.any() else None, tn / (~y).sum() if (~y).any() else None)
             if r is not None]  # fmt: skip
    i = int(np.argmax(np.mean(rates, axis=0)))
    return float(values[i] if i == 0 else (values[i] + values[i - 1]) / 2)


def fit_class_priors(
    y: np.ndarray, probs: np.ndarray, *, rounds: int = 3, steps: int = 101
) -> np.ndarray:
    """Class priors (summing to 1) whose :func:`prior_corrected` argmax has the best balanced
    accuracy on ``(y, probs)``: coordinate ascent over one log-offset per class, each tried
    at ``steps`` quantiles of the offsets where a row's decision switches to or from that
    class; the plain argmax (uniform priors) is the start, and the offset nearest the current
    one wins ties.
    """
    y = np.asarray(y).astype(int)
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    k = logp.shape[1]
    offsets = np.zeros(k)

    def score(b: np.ndarray) -> float:
        return balanced_accuracy(y, (logp - b).argmax(axis=1), k)

    best = score(offsets)
    for _ in range(rounds):
        improved = False
        for c in range(k):
            rest = np.delete(logp - offsets, c, axis=1).max(axis=1)
            switch = np.quantile(logp[:, c] - rest, np.linspace(0, 1, steps))
            grid = np.unique(np.r_[switch - 1e-9, switch + 1e-9])
            for g in grid[np.argsort(np.abs(grid - offsets[c]), kind="stable")]:
                trial = offsets.copy()
                trial[c] = g
                if (s := score(trial)) > best + 1e-12:
                    best, offsets, improved = s, trial, True
        if not improved:
            break
    priors = np.exp(offsets - offsets.max())
    return priors / priors.sum()
