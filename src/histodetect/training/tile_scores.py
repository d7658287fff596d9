"""Tile classification scores: AUC, F1, precision, recall, (balanced) accuracy, per class.

Pure functions of labels and probabilities (NumPy and scikit-learn only), used to validate each
epoch and to write a fold's ``metrics.json``.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from sklearn import metrics as skm


def binary_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` holds a single class."""
    return float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def metric_key(name: str) -> str:
    """A class name usable in metric and parameter names."""
    return re.sub(r"[^\w.-]", "_", name)


def multiclass_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC AUC weighted by class size; NaN unless every class occurs in ``y``."""
    if len(np.unique(y)) != probs.shape[1]:
        return float("nan")
    return float(skm.roc_auc_score(y, probs, multi_class="ovr", average="weighted"))


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Weighted AUC, F1, precision, recall, accuracy, balanced accuracy, and per-class values.

    The prediction is the most probable class; per-class AUC is one-vs-rest.
    """
    y_true, y_pred = np.asarray(y).astype(int), np.asarray(probs).argmax(axis=1)
    labels = list(range(len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"auc": multiclass_auc(y_true, probs)}
        for avg in ("weighted", None):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0
            )
            if avg is not None:
                out |= {"f1": float(f), "precision": float(p), "recall": float(r)}
                out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
                out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y_true, y_pred))
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
            "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
            "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        }
