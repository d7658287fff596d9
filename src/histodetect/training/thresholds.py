"""The fold ensemble's decision rule, chosen on out-of-fold validation predictions.

Each fold model wrote its validation rows' probabilities (``val_predictions.parquet``); every
row there was scored by the one model that did not train on its patient. Pooled, they choose
the decision rule the ensemble uses instead of 0.5: for a binary model the probability
threshold with the best balanced accuracy (:func:`~histodetect.training.tile_scores.best_threshold`);
for a multi-class model the argmax with class priors corrected (the class of largest
``p / prior``), the priors fitted to the best balanced accuracy
(:func:`~histodetect.training.tile_scores.fit_class_priors`). A row whose patient the scoring
model trained on, or a patient scored by two models, is refused: a threshold chosen on rows
the model has seen would be optimistic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from histodetect.errors import InputError
from histodetect.io import atomic_path
from histodetect.training.tile_scores import (
    at_decision,
    best_threshold,
    fit_class_priors,
    multiclass_metrics,
    patch_metrics,
    prior_corrected,
)

THRESHOLD_FILE = "threshold.json"
OOF = "oof"
"""Suffix of the metrics at the out-of-fold decision (``patch_balanced_accuracy_at_oof``)."""


@dataclass(frozen=True)
class Decision:
    """How probabilities become classes: ``threshold`` (binary) or ``priors`` (multi-class)."""

    classes: list[str]
    threshold: float | None = None
    priors: list[float] | None = None

    @property
    def multiclass(self) -> bool:
        return self.priors is not None

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
    def for_models(cls, model_paths: Sequence[str | Path]) -> Decision:
        """The decision written beside fold models (``threshold.json`` in their parent folder)."""
        folders = {Path(p).resolve().parent.parent for p in model_paths}
        if len(folders) != 1:
            raise ValueError(f"fold models of one ensemble share a folder, not {sorted(folders)}")
        path = folders.pop() / THRESHOLD_FILE
        return cls.from_dict(json.loads(path.read_text())["decision"])


def prob_matrix(table: pd.DataFrame) -> np.ndarray:
    """``prob`` (binary) or the ``(N, K)`` columns ``prob_0..prob_{K-1}`` of a predictions table."""
    if "prob" in table:
        return table["prob"].to_numpy(np.float64)
    k = sum(c.startswith("prob_") for c in table.columns)
    return table[[f"prob_{i}" for i in range(k)]].to_numpy(np.float64)


def read_oof(
    prediction_paths: Sequence[str | Path], model_paths: Sequence[str | Path]
) -> pd.DataFrame:
    """Every fold's validation predictions, checked to be out of fold, in one table.

    ``prediction_paths[i]`` are the rows ``model_paths[i]`` scored. Raises
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
                f"({', '.join(seen[:3])}): not out of fold",
            )
        for patient in patients.unique():
            if owner.setdefault(patient, i) != i:
                other = prediction_paths[owner[patient]]
                raise InputError(pred_path, f"patient {patient} is also in {other}")
        tables.append(table.assign(patient_id=patients))
    return pd.concat(tables, ignore_index=True)


def model_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` record of a model file, without building the network."""
    return torch.load(path, map_location="cpu", weights_only=True)["meta"]


def fit_decision(oof: pd.DataFrame, classes: Sequence[str]) -> Decision:
    """The decision rule with the best balanced accuracy on out-of-fold rows."""
    y, probs = oof["label"].to_numpy(np.int64), prob_matrix(oof)
    if probs.ndim == 2:
        return Decision(list(classes), priors=[float(p) for p in fit_class_priors(y, probs)])
    return Decision(list(classes), threshold=best_threshold(y, probs))


def write_threshold(
    prediction_paths: Sequence[str | Path], model_paths: Sequence[str | Path], out: str | Path
) -> dict[str, Any]:
    """Choose the ensemble's decision out of fold and write it with its metrics to ``out``.

    The record holds ``decision`` (:meth:`Decision.to_dict`), the number of rows, and the
    pooled and per-fold metrics at the plain decision (``..._at_0.5`` or ``..._at_argmax``)
    and at the out-of-fold one (``..._at_oof``).
    """
    oof = read_oof(prediction_paths, model_paths)
    classes = model_meta(model_paths[0])["classes"]
    decision = fit_decision(oof, classes)
    plain = "argmax" if decision.multiclass else "0.5"

    def both(table: pd.DataFrame) -> dict[str, float]:
        y, probs = table["label"].to_numpy(np.int64), prob_matrix(table)
        base = Decision(list(classes), 0.5, [1.0] * len(classes) if decision.multiclass else None)
        out = at_decision(base.scores(y, probs), plain)
        tuned = decision.scores(y, probs)
        return out | {f"{k}_at_{OOF}": v for k, v in tuned.items() if not k.startswith("auc")}

    record = {
        "decision": decision.to_dict(),
        "n_rows": len(oof),
        "pooled": both(oof),
        "folds": {f"fold_{f}": both(t) for f, t in oof.groupby("fold")},
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(_finite(record), indent=2) + "\n")
    return record


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
