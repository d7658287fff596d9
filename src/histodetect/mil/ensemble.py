"""The fold models as one ensemble over the test bags, the decision chosen out of fold, and
the metrics (``results/mil/predictions.tsv`` and ``metrics.json``).

The decision is the tile stage's (:mod:`histodetect.training.thresholds`): a threshold on the
positive probability (binary) or class priors (multi-class and ordinal grades), the one with
the best balanced accuracy on the out-of-fold bags, each scored by the model blind to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from histodetect.fit.metrics import balanced_accuracy, binary_auc
from histodetect.io import atomic_path
from histodetect.mil.data import Bag, FeatureSource, bags_of
from histodetect.mil.models import BagModel, MilTask, load_mil_model, score_bag
from histodetect.mil.outcomes import group_record, outcome_ensemble, survival_options
from histodetect.training.thresholds import (
    Decision,
    fit_decision,
    model_meta,
    prob_matrix,
    read_oof,
)

_METRICS = ("auc", "balanced_accuracy", "qwk")


def class_probs(table: pd.DataFrame) -> np.ndarray:
    """``(N, K)`` class probabilities of a predictions table (binary ``prob``: two columns)."""
    probs = prob_matrix(table)
    return np.stack([1 - probs, probs], 1) if probs.ndim == 1 else probs


def qwk(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Quadratic weighted kappa over the grades ``0..k-1`` (scikit-learn's with those labels)."""
    observed = np.zeros((k, k))
    np.add.at(observed, (np.asarray(y, int), np.asarray(pred, int)), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / max(observed.sum(), 1)
    grades = np.arange(k)
    weights = (grades[:, None] - grades[None]) ** 2
    denominator = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denominator) if denominator else float("nan")


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC, or the mean one-vs-rest AUC over the classes present (macro)."""
    if probs.shape[1] == 2:
        return binary_auc(y, probs[:, 1])
    aucs = [
        binary_auc(y == c, probs[:, c])
        for c in range(probs.shape[1])
        if 0 < (y == c).sum() < len(y)
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def scores(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, ordinal: bool) -> dict[str, float]:
    """``auc``, ``balanced_accuracy`` and, for ordinal grades, ``qwk``."""
    k = probs.shape[1]
    out = {"auc": macro_auc(y, probs), "balanced_accuracy": balanced_accuracy(y, pred, k)}
    if ordinal:
        out["qwk"] = qwk(y, pred, k)
    return out


def bootstrap(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, ordinal: bool, n: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals of :func:`scores` over ``n`` resamples of the bags."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        for key, value in scores(y[i], probs[i], pred[i], ordinal).items():
            draws.setdefault(key, []).append(value)
    return {
        f"{key}_ci95": [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
        for key, v in draws.items()
        if np.isfinite(v).any()
    }


class BagScorer(Protocol):
    """The fold models of one kind: their ``meta`` and each one's probabilities of a bag."""

    meta: dict[str, Any]

    def score(self, bag: Bag) -> tuple[np.ndarray, int]:
        """``(folds, K)`` class probabilities and the bag's tile count."""
        ...


class FeatureScorer:
    """Bag models over tile embeddings (:mod:`histodetect.mil.train`)."""

    def __init__(self, model_paths: Sequence[str | Path], source: FeatureSource) -> None:
        self.loaded = [load_mil_model(p) for p in model_paths]
        self.meta, self.source = self.loaded[0][2], source

    def score(self, bag: Bag) -> tuple[np.ndarray, int]:
        x = self.source.bag(bag)
        return np.array([score_bag(model, task, x)[0] for model, task, _ in self.loaded]), len(x)


def ensemble(
    folds: pd.DataFrame,
    model_paths: Sequence[str | Path],
    prediction_paths: Sequence[str | Path],
    source: FeatureSource,
    *,
    n_bootstrap: int = 1000,
    seed: int = 42,
    scorer: BagScorer | None = None,
    survival: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every test and predict-only bag with every fold model (``scorer``; default: the
    bag models over ``source``'s features); return the predictions table (test, predict and,
    out of fold, training bags) and the metrics (a numeric label's:
    :func:`~histodetect.mil.outcomes.regression_ensemble`, survival's
    :func:`~histodetect.mil.outcomes.survival_ensemble`: through
    :func:`~histodetect.mil.outcomes.outcome_ensemble`; ``survival``: its ``mil`` keys)."""
    scorer = scorer or FeatureScorer(model_paths, source)
    meta = scorer.meta
    if meta["task"] in ("regression", "survival"):
        return outcome_ensemble(
            folds,
            scorer,
            model_paths,
            prediction_paths,
            n_bootstrap=n_bootstrap,
            seed=seed,
            survival=survival,
        )
    classes, ordinal = list(meta["classes"]), meta["task"] == "ordinal"
    oof, decision = oof_decision(prediction_paths, model_paths, classes)
    names = [f"prob_{c}" for c in classes]
    rows = []
    scored = [b for b in bags_of(folds) if b.split != "train" or b.y < 0]
    for bag in scored:
        per_fold, n_tiles = scorer.score(bag)
        mean, call, agree = fold_vote(per_fold, decision)
        rows.append({"bag_id": bag.bag_id, "split": bag.split, "y": bag.y, "scored_by": "ensemble",
                     **dict(zip(names, mean, strict=True)), "call": classes[call],
                     "fold_agreement": agree, "n_tiles": n_tiles})  # fmt: skip
    oof_probs = class_probs(oof)
    oof_calls = _predict(decision, oof_probs)
    for i, r in enumerate(oof.itertuples()):
        rows.append({"bag_id": r.bag_id, "split": "train", "y": r.label,
                     "scored_by": f"fold_{r.fold}", **dict(zip(names, oof_probs[i], strict=True)),
                     "call": classes[oof_calls[i]], "fold_agreement": np.nan})  # fmt: skip
    table = pd.DataFrame(rows)
    table.insert(3, "label", [classes[y] if y >= 0 else "" for y in table.y])
    slides = folds.groupby("bag_id", sort=False).slide_id.agg(",".join)
    table.insert(1, "slides", table.bag_id.map(slides))
    test = table[(table.split == "test") & (table.y >= 0)]
    metrics: dict[str, Any] = {
        "task": meta["task"],
        "classes": classes,
        "model": meta["arch"]["kind"],
    }
    metrics |= {"decision": decision.to_dict(), "n_test_bags": len(test), "n_oof_bags": len(oof)}
    metrics |= _block(test, names, classes, decision, ordinal, n_bootstrap, seed)
    oof_scores = scores(oof.label.to_numpy(int), oof_probs, oof_calls, ordinal)
    metrics |= {f"oof_{k}": v for k, v in oof_scores.items()}
    return table.drop(columns="y"), metrics


def oof_decision(
    prediction_paths: Sequence[str | Path], model_paths: Sequence[str | Path], classes: list[str]
) -> tuple[pd.DataFrame, Decision]:
    """The out-of-fold rows (a bag scored by its own model is refused) and the decision
    chosen on them."""
    oof = read_oof(prediction_paths, model_paths)
    return oof, fit_decision(oof, classes)


def ensemble_call(
    loaded: Sequence[tuple[BagModel, MilTask, dict[str, Any]]], decision: Decision, x: torch.Tensor
) -> tuple[np.ndarray, int, float]:
    """One bag through the fold models: the mean class probabilities, the class code called
    at ``decision`` and the share of fold models whose own call agrees."""
    return fold_vote(
        np.array([score_bag(model, task, x)[0] for model, task, _ in loaded]), decision
    )


def fold_vote(per_fold: np.ndarray, decision: Decision) -> tuple[np.ndarray, int, float]:
    """The fold models' ``(folds, K)`` probabilities of one bag as one answer: their mean, the
    class code called at ``decision`` and the share of fold models whose own call agrees."""
    mean = per_fold.mean(0)
    call = int(_predict(decision, mean[None])[0])
    return mean, call, float(np.mean(_predict(decision, per_fold) == call))


def write_decision(
    model_paths: Sequence[str | Path],
    prediction_paths: Sequence[str | Path],
    out: str | Path,
    survival: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the ensemble's out-of-fold decision beside the fold models (``decision.json``),
    with what a later predict checks: task, classes, bag, encoder id and the fold models
    (a numeric label or survival has no decision: null). Survival's risk groups, cut out of
    fold at the ``risk_groups`` of ``survival`` (its ``mil`` keys), are saved here for
    predict (:func:`~histodetect.mil.outcomes.group_record`, as ``metrics.json`` has them),
    with the ``time_unit``."""
    meta = model_meta(model_paths[0])
    classes = list(meta["classes"])
    if meta["task"] in ("regression", "survival"):
        oof, decision = read_oof(prediction_paths, model_paths), None
    else:
        oof, decision = oof_decision(prediction_paths, model_paths, classes)
    record = {
        "decision": decision.to_dict() if decision else None,
        "task": meta["task"],
        "classes": classes,
        "model": meta["arch"]["kind"],
        "bag": meta.get("bag"),
        "encoder_id": meta.get("encoder_id"),
        "folds": sorted(int(model_meta(p)["fold"]) for p in model_paths),
        "n_oof_bags": len(oof),
    }
    if meta["task"] == "survival":
        options = survival_options(survival)
        record["risk_groups"] = group_record(oof.risk, options["risk_groups"])
        record["time_unit"] = options["time_unit"]
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _predict(decision: Decision, probs: np.ndarray) -> np.ndarray:
    """Class codes of ``(N, K)`` probabilities at the decision (binary: the positive column)."""
    return decision.predict(probs if decision.multiclass else probs[:, 1])


def _block(
    test: pd.DataFrame,
    names: list[str],
    classes: list[str],
    decision: Decision,
    ordinal: bool,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """The test bags' metrics, confusion matrix (rows: true class) and 95% intervals."""
    keys = {k: float("nan") for k in _METRICS if ordinal or k != "qwk"}
    if test.empty:
        return keys | {"confusion": []}
    y, probs = test.y.to_numpy(int), test[names].to_numpy(np.float64)
    pred = _predict(decision, probs)
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (y, pred), 1)
    return (
        scores(y, probs, pred, ordinal)
        | {"confusion": confusion.tolist()}
        | bootstrap(y, probs, pred, ordinal, n_bootstrap, seed)
    )


def write_outputs(table: pd.DataFrame, metrics: dict[str, Any], tsv: Path, out_json: Path) -> None:
    """``predictions.tsv`` and ``metrics.json`` (NaN written as null)."""
    with atomic_path(tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    clean = json.loads(json.dumps(metrics, default=float).replace("NaN", "null"))
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(clean, indent=2) + "\n")
