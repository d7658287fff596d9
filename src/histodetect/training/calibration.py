"""Post-hoc calibration of a fold model, fitted on its own validation rows.

A fold model's probabilities drift from fold to fold (one fold's positives at 0.9, another's
at 0.4), so a threshold pooled over folds, or chosen on some folds and carried to another,
misfires. Each model is therefore calibrated on the validation rows it scored
(``val_predictions.parquet``, patients it did not train on) and every consumer (out-of-fold
threshold, tile scores, heatmaps, boxes, points, predict) reads the calibrated probabilities.

Methods (``train.calibration``):

- ``temperature``: logits divided by one scalar ``T`` fitted by least log loss (binary and
  multi-class; keeps the ranking, so AUC and the argmax are unchanged; keeps 0.5 fixed too,
  so it cannot move a fold whose probabilities all sit below 0.5);
- ``platt``: ``sigmoid(a * logit + b)`` (binary; multi-class models get ``temperature``);
  the default: on the MITOS 2012 bench its out-of-sample log loss was the least (0.148
  against temperature 0.165, isotonic 0.201, raw 0.182) and it alone moved the folds'
  thresholds together (pooled point F1 0.346 against raw 0.216, no fold at 0);
- ``isotonic``: a monotone step map of the probability (binary; scikit-learn);
- ``none``: the raw probabilities, still written so consumers know it was chosen.

The record is ``calibration.json`` beside ``model.pt``. Logits are recovered from the stored
probabilities (``log p - log(1 - p)``, or ``log p`` for softmax, exact up to the clip at
``1e-7``), so calibrating needs no second pass over the tiles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

from histodetect.errors import InputError
from histodetect.io import atomic_path

if TYPE_CHECKING:  # torch only where logits are: the box and evaluation jobs run without it
    import torch

CALIBRATION_FILE = "calibration.json"
METHODS = ("temperature", "platt", "isotonic", "none")
BINARY_ONLY = ("platt", "isotonic")
EPS = 1e-7
ECE_BINS = 15


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map (see the module doc); ``fit`` holds the fit's statistics."""

    method: str = "none"
    temperature: float = 1.0
    slope: float = 1.0
    intercept: float = 0.0
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)
    fit: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}, not {self.method!r}")

    def probs_from_logits(self, logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
        """Calibrated softmax ``(N, K)`` or positive-class sigmoid ``(N, 1)`` of raw logits."""
        if multiclass:
            if self.method in BINARY_ONLY:
                raise ValueError(f"{self.method} calibration is for binary models only")
            return (logits / self.temperature).softmax(dim=1)
        z = logits[:, :1]
        if self.method == "temperature":
            return (z / self.temperature).sigmoid()
        if self.method == "platt":
            return (self.slope * z + self.intercept).sigmoid()
        p = z.sigmoid()
        if self.method == "isotonic":
            return p.new_tensor(np.interp(p.float().cpu().numpy(), self.knots_x, self.knots_y))
        return p

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated ``(N,)`` positive-class or ``(N, K)`` class probabilities of raw ones
        (the same map as :meth:`probs_from_logits`, from probabilities)."""
        probs = np.asarray(probs, np.float64)
        if self.method == "none":
            return probs
        if probs.ndim == 2:
            if self.method in BINARY_ONLY:
                raise ValueError(f"{self.method} calibration is for binary models only")
            z = _logits(probs) / self.temperature
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)
        if self.method == "isotonic":
            return np.interp(probs, self.knots_x, self.knots_y)
        z = _logits(probs)
        if self.method == "temperature":
            return expit(z / self.temperature)
        return expit(self.slope * z + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**d)


def _logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    return np.log(p) if p.ndim == 2 else np.log(p) - np.log1p(-p)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``(N,)`` or ``(N, K)`` probabilities."""
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    y = np.asarray(y).astype(np.int64)
    if p.ndim == 2:
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins: of the positive-class probability (binary) or of
    the top class's confidence (multi-class), weighted by the rows per bin."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(y).astype(np.int64)
    if p.ndim == 2:
        conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    else:
        conf, hit = p, y.astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, hit, bins) - np.bincount(which, conf, bins))
    return float(gap.sum() / max(total.sum(), 1))


def fit_calibration(y: np.ndarray, probs: np.ndarray, method: str) -> Calibration:
    """The ``method`` calibration of raw ``probs`` to labels ``y`` (least log loss).

    With one class only among the rows nothing can be fitted: the map is ``none`` and
    ``fit["skipped_one_class"]`` says so.
    """
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {METHODS}, not {method!r}")
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y).astype(np.int64)
    if method in BINARY_ONLY and probs.ndim == 2:
        raise ValueError(f"{method} calibration is for binary models; use temperature")
    before = {"n_rows": float(len(y)), "nll_raw": log_loss(y, probs)}
    if method == "none" or len(np.unique(y)) < 2:
        skipped = {"skipped_one_class": 1.0} if method != "none" else {}
        return Calibration("none", fit=before | skipped)
    logits = _logits(probs)
    if method == "temperature":

        def nll_t(log_t: float) -> float:
            z = logits / np.exp(log_t)
            if z.ndim == 2:
                z = z - z.max(1, keepdims=True)
                return float(-np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))))
            return float(np.mean(np.logaddexp(0, z) - y * z))

        best = minimize_scalar(nll_t, bounds=(-4.0, 4.0), method="bounded")
        cal = Calibration("temperature", temperature=float(np.exp(best.x)))
    elif method == "platt":

        def nll_ab(ab: np.ndarray) -> float:
            z = ab[0] * logits + ab[1]
            return float(np.mean(np.logaddexp(0, z) - y * z))

        a, b = minimize(nll_ab, np.array([1.0, 0.0]), method="Nelder-Mead").x
        cal = Calibration("platt", slope=float(a), intercept=float(b))
    else:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(probs, y)
        cal = Calibration(
            "isotonic",
            knots_x=[float(v) for v in iso.X_thresholds_],
            knots_y=[float(v) for v in iso.y_thresholds_],
        )
    after = {"nll_calibrated": log_loss(y, cal.apply(probs))}
    return Calibration(**(cal.to_dict() | {"fit": before | after}))


def prediction_arrays(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``label`` and the ``prob`` (binary) or ``prob_0..prob_{K-1}`` columns of a predictions table."""
    if "prob" in table:
        return table["label"].to_numpy(np.int64), table["prob"].to_numpy(np.float64)
    k = sum(c.startswith("prob_") for c in table.columns)
    cols = [f"prob_{i}" for i in range(k)]
    return table["label"].to_numpy(np.int64), table[cols].to_numpy(np.float64)


def calibrated_table(table: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """A predictions table with its probability columns replaced by calibrated ones."""
    _, probs = prediction_arrays(table)
    out = calibration.apply(probs)
    if out.ndim == 1:
        return table.assign(prob=out)
    return table.assign(**{f"prob_{k}": out[:, k] for k in range(out.shape[1])})


def write_calibration(
    predictions_path: str | Path, model_path: str | Path, method: str, out: str | Path
) -> Calibration:
    """Fit ``method`` on a fold model's validation predictions and write ``calibration.json``.

    A multi-class model asked for a binary-only method (``platt``, ``isotonic``) gets
    ``temperature`` instead, recorded as ``fit["fallback_from_<method>"]``.

    Raises:
        InputError: naming the predictions file when its rows are of another fold than the model's.
    """
    import torch

    meta = torch.load(model_path, map_location="cpu", weights_only=True)["meta"]
    table = pd.read_parquet(predictions_path)
    if "fold" in table and set(table["fold"].unique()) - {meta.get("fold")}:
        raise InputError(
            predictions_path, f"rows of another fold than model fold {meta.get('fold')}"
        )
    y, probs = prediction_arrays(table)
    fallback = method in BINARY_ONLY and probs.ndim == 2
    calibration = fit_calibration(y, probs, "temperature" if fallback else method)
    if fallback:  # multi-class: the one method that keeps the softmax's argmax
        fit = calibration.fit | {f"fallback_from_{method}": 1.0}
        calibration = Calibration(**(calibration.to_dict() | {"fit": fit}))
    with atomic_path(out) as tmp:
        tmp.write_text(
            json.dumps(calibration.to_dict() | {"fold": meta.get("fold")}, indent=2) + "\n"
        )
    return calibration


def read_calibration(model_path: str | Path) -> Calibration:
    """The calibration written beside a fold model (``calibration.json`` in its folder).

    Raises:
        InputError: naming the missing or unreadable file; models from before calibration
            (0.x) have none: write one with ``{"method": "none"}`` to use them uncalibrated.
    """
    path = Path(model_path).parent / CALIBRATION_FILE
    if not path.is_file():
        raise InputError(
            path,
            "missing: the fold model has no calibration (trained before calibration files); "
            'run its calibrate_fold, or write {"method": "none"} there to use it uncalibrated',
        )
    try:
        record = json.loads(path.read_text())
        record.pop("fold", None)
        return Calibration.from_dict(record)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"not a calibration record ({err})") from err


def compare_methods(
    table: pd.DataFrame, methods: tuple[str, ...] = METHODS, *, group: str = "slide_id"
) -> pd.DataFrame:
    """Log loss and ECE of each method out of sample within one fold's validation rows.

    Each ``group`` (a slide, say) is scored by the map fitted on the fold's other groups, so
    no row helps fit its own map; with one group only, two halves of the rows (seed 0).
    Returns one row per method: ``method, nll, ece, n_rows``.
    """
    y, probs = prediction_arrays(table)
    groups = table[group].astype(str).to_numpy() if group in table else np.zeros(len(y), str)
    if len(np.unique(groups)) < 2:
        groups = np.random.default_rng(0).permutation(len(y)) % 2
    out = []
    for method in methods:
        if method in BINARY_ONLY and probs.ndim == 2:
            continue
        calibrated = np.empty_like(probs)
        for g in np.unique(groups):
            mine = groups == g
            cal = fit_calibration(y[~mine], probs[~mine], method)
            calibrated[mine] = cal.apply(probs[mine])
        out.append(
            {
                "method": method,
                "nll": log_loss(y, calibrated),
                "ece": expected_calibration_error(y, calibrated),
                "n_rows": len(y),
            }
        )
    return pd.DataFrame(out)
