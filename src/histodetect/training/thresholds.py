"""The fold ensemble's decision rule, chosen on out-of-fold validation predictions.

Each fold model wrote its validation rows' probabilities (``val_predictions.parquet``); every
row there was scored by the one model that did not train on its patient. Pooled, they choose
the decision rule the ensemble uses instead of 0.5: for a binary model the probability
threshold with the best balanced accuracy (:func:`~histodetect.fit.metrics.best_threshold`);
for a multi-class model the argmax with class priors corrected (the class of largest
``p / prior``), the priors fitted to the best balanced accuracy
(:func:`~histodetect.fit.metrics.fit_class_priors`). A row whose patient the scoring
model trained on, or a patient scored by two models, is refused: a threshold chosen on rows
the model has seen would be optimistic.

Metrics name their decision: ``_at_0.5`` (binary) or ``_at_argmax`` (multi-class) for the plain
one, ``_at_oof_threshold`` or ``_at_oof_priors`` for the one chosen here (:attr:`Decision.name`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.columns import class_prob_column
from histodetect.errors import InputError, name_some
from histodetect.fit.metrics import (
    at_decision,
    best_threshold,
    fit_class_priors,
    metric_key,
    multiclass_metrics,
    patch_metrics,
    prior_corrected,
)
from histodetect.io import atomic_path
from histodetect.training.calibration import calibrated_table, read_calibration

THRESHOLD_FILE = "threshold.json"


@dataclass(frozen=True)
class Decision:
    """How probabilities become classes: ``threshold`` (binary) or ``priors`` (multi-class)."""

    classes: list[str]
    threshold: float | None = None
    priors: list[float] | None = None

    @property
    def multiclass(self) -> bool:
        return self.priors is not None

    @property
    def name(self) -> str:
        """Suffix of the metrics at this decision: ``oof_threshold`` or ``oof_priors``."""
        return "oof_priors" if self.multiclass else "oof_threshold"

    @property
    def plain(self) -> str:
        """Suffix of the metrics at the untuned decision: ``0.5`` or ``argmax``."""
        return "argmax" if self.multiclass else "0.5"

    def summary(self) -> dict[str, float]:
        """The decision as numbers for a metrics table: ``oof_threshold`` or ``oof_prior_<c>``."""
        if not self.multiclass:
            return {"oof_threshold": float(self.threshold)}
        return {
            f"oof_prior_{metric_key(c)}": float(p)
            for c, p in zip(self.classes, self.priors, strict=True)
        }

    def call_tiles(self, scores: pd.DataFrame) -> pd.DataFrame:
        """``scores`` with each tile's call at this decision, column ``call_at_<name>``: 1 or 0
        (binary, from ``prob``) or the class name (multi-class, from ``prob_<class>``)."""
        column = f"call_at_{self.name}"
        if not self.multiclass:
            return scores.assign(**{column: self.predict(scores["prob"].to_numpy())})
        names = [class_prob_column(c) for c in self.classes]
        if not set(names) <= set(scores.columns):
            raise ValueError(f"tile scores lack {names}: not this decision's model")
        codes = self.predict(scores[names].to_numpy(np.float64))
        return scores.assign(**{column: np.asarray(self.classes, dtype=object)[codes]})

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Class codes of ``(N,)`` positive-class or ``(N, K)`` class probabilities."""
        if self.multiclass:
            return prior_corrected(probs, np.asarray(self.priors))
        return (np.asarray(probs) >= self.threshold).astype(np.int64)

    def scores(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The fold metrics of :class:`~histodetect.training.train.Task`, at this decision."""
        if self.multiclass:
            return multiclass_metrics(y, probs, self.classes, np.asarray(self.priors))
        return patch_metrics(y, probs, float(self.threshold))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": self.classes}
        if self.multiclass:
            return out | {"rule": "argmax of p / prior", "priors": self.priors}
        return out | {"rule": "positive when p >= threshold", "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(list(d["classes"]), d.get("threshold"), d.get("priors"))

    @classmethod
    def read(cls, path: str | Path) -> Decision:
        """The decision of a ``threshold.json`` record (:func:`write_threshold`)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text())["decision"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"not a decision record ({err})") from err

    @classmethod
    def for_models(cls, model_paths: Sequence[str | Path]) -> Decision:
        """The decision written beside fold models (``threshold.json`` in their parent folder)."""
        folders = {Path(p).resolve().parent.parent for p in model_paths}
        if len(folders) != 1:
            raise ValueError(
                f"fold models of one ensemble share a folder, not {name_some(sorted(folders))}"
            )
        return cls.read(folders.pop() / THRESHOLD_FILE)


def prob_matrix(table: pd.DataFrame) -> np.ndarray:
    """``prob`` (binary) or the ``(N, K)`` columns ``prob_0..prob_{K-1}`` of a predictions table."""
    if "prob" in table:
        return table["prob"].to_numpy(np.float64)
    k = sum(c.startswith("prob_") for c in table.columns)
    return table[[f"prob_{i}" for i in range(k)]].to_numpy(np.float64)


def read_oof(
    prediction_paths: Sequence[str | Path],
    model_paths: Sequence[str | Path],
    *,
    calibrated: bool = False,
) -> pd.DataFrame:
    """Every fold's validation predictions, checked to be out of fold, in one table.

    ``prediction_paths[i]`` are the rows ``model_paths[i]`` scored; with ``calibrated`` each
    table's probabilities go through its model's ``calibration.json`` (beside the model). Raises
    :class:`~histodetect.errors.InputError` when a table's fold is not its model's, when a
    model does not record its training patients (``train_patients``) or a table lacks
    ``patient_id``, when a row's patient is one its model trained on, or when a patient is in
    two tables.
    """
    if len(prediction_paths) != len(model_paths) or not model_paths:
        raise ValueError("one predictions table per fold model, at least one")
    tables: list[pd.DataFrame] = []
    owner: dict[str, int] = {}
    for i, (pred_path, model_path) in enumerate(zip(prediction_paths, model_paths, strict=True)):
        meta = model_meta(model_path)
        table = pd.read_parquet(pred_path)
        if "patient_id" not in table or "train_patients" not in meta:
            raise InputError(pred_path, "cannot check it is out of fold: no patient ids")
        if set(table["fold"].unique()) - {meta["fold"]}:
            raise InputError(pred_path, f"rows of another fold than model fold {meta['fold']}")
        patients = table["patient_id"].astype(str)
        seen = sorted(set(patients) & set(meta["train_patients"]))
        if seen:
            raise InputError(
                pred_path,
                f"{len(seen)} patient(s) scored by a model that trained on them "
                f"({name_some(seen)}): not out of fold",
            )
        for patient in patients.unique():
            if owner.setdefault(patient, i) != i:
                other = prediction_paths[owner[patient]]
                raise InputError(pred_path, f"patient {patient} is also in {other}")
        if calibrated:
            table = calibrated_table(table, read_calibration(model_path))
        tables.append(table.assign(patient_id=patients))
    return pd.concat(tables, ignore_index=True)


def model_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` record of a model file, without building the network."""
    import torch  # here: the box and evaluation jobs import this module and need no torch

    return torch.load(path, map_location="cpu", weights_only=True)["meta"]


def fit_decision(oof: pd.DataFrame, classes: Sequence[str]) -> Decision:
    """The decision rule with the best balanced accuracy on out-of-fold rows."""
    y, probs = oof["label"].to_numpy(np.int64), prob_matrix(oof)
    if probs.ndim == 2:
        return Decision(list(classes), priors=[float(p) for p in fit_class_priors(y, probs)])
    return Decision(list(classes), threshold=best_threshold(y, probs))


def write_threshold(
    prediction_paths: Sequence[str | Path],
    model_paths: Sequence[str | Path],
    out: str | Path,
    fold_metrics: Sequence[tuple[str | Path, str | Path]] = (),
    *,
    calibrated: bool = False,
) -> dict[str, Any]:
    """Choose the ensemble's decision out of fold and write it with its metrics to ``out``.

    With ``calibrated`` (the workflow's way) every fold's rows are first calibrated by their
    model's ``calibration.json``, as the ensemble's consumers see them.
    The record holds ``decision`` (:meth:`Decision.to_dict`), the number of rows, and the
    pooled and per-fold metrics at the plain decision (``..._at_0.5`` or ``..._at_argmax``)
    and at the out-of-fold one (``..._at_oof_threshold`` or ``..._at_oof_priors``).
    ``fold_metrics`` pairs, one per model in order, name a fold's training metrics
    (``training_metrics.json``) and where to write them with the fold's metrics at the
    out-of-fold decision added (``patch_<metric>_at_oof_threshold`` ...) and the decision
    itself (:meth:`Decision.summary`): the fold's ``metrics.json``.
    """
    oof = read_oof(prediction_paths, model_paths, calibrated=calibrated)
    classes = model_meta(model_paths[0])["classes"]
    decision = fit_decision(oof, classes)

    def both(table: pd.DataFrame) -> dict[str, float]:
        y, probs = table["label"].to_numpy(np.int64), prob_matrix(table)
        base = Decision(list(classes), 0.5, [1.0] * len(classes) if decision.multiclass else None)
        out = at_decision(base.scores(y, probs), decision.plain)
        tuned = decision.scores(y, probs)
        return out | {
            f"{k}_at_{decision.name}": v for k, v in tuned.items() if not k.startswith("auc")
        }

    folds = {f"fold_{f}": both(t) for f, t in oof.groupby("fold")}
    record = {
        "decision": decision.to_dict(),
        "n_rows": len(oof),
        "calibrated": calibrated,
        "pooled": both(oof),
        "folds": folds,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(_finite(record), indent=2) + "\n")
    if fold_metrics and len(fold_metrics) != len(model_paths):
        raise ValueError("one (training metrics, metrics) pair per fold model")
    for model_path, (source, target) in zip(model_paths, fold_metrics, strict=False):
        tuned = folds.get(f"fold_{model_meta(model_path)['fold']}", {})
        metrics = json.loads(Path(source).read_text())
        metrics |= {f"patch_{k}": v for k, v in tuned.items() if k.endswith(decision.name)}
        with atomic_path(target) as tmp:
            text = json.dumps(metrics | decision.summary(), indent=2, allow_nan=True)
            tmp.write_text(text + "\n")
    return record


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
