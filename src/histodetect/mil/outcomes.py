"""The fold ensemble of a numeric outcome (``mil.task: regression``; survival's risks:
:func:`survival_ensemble`, its time-dependent scores and risk groups
:mod:`histodetect.mil.survival_metrics`): each bag's prediction
(the fold models' mean; out of fold for the training bags), and MAE, RMSE, R², Pearson and
Spearman with bootstrap intervals, on the test bags and out of fold.

A bag's fold models disagree by ``fold_sd`` (their predictions' spread): no decision is
chosen, the number is the answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from histodetect.mil.data import bags_of
from histodetect.mil.survival import survival_scores
from histodetect.mil.survival_metrics import (
    default_horizons,
    group_names,
    logrank_p,
    risk_cuts,
    risk_groups,
    timed_scores,
)
from histodetect.training.thresholds import read_oof

REGRESSION_METRICS = ("mae", "rmse", "r2", "pearson", "spearman")
SURVIVAL_OPTIONS = {"horizons": None, "risk_groups": None, "time_unit": "days"}
"""The ``mil`` keys survival's metrics and groups read, with their defaults."""


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² (1 - residual / total sum of squares), Pearson's and Spearman's r
    (NaN where undefined: fewer than 2 bags, or a constant side)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    if len(y) == 0:
        return dict.fromkeys(REGRESSION_METRICS, float("nan"))
    error = pred - y
    total = float(((y - y.mean()) ** 2).sum())
    out = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    out["r2"] = 1 - float((error**2).sum()) / total if total > 0 else float("nan")
    varied = len(y) > 1 and np.ptp(y) > 0 and np.ptp(pred) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["pearson"] = float(stats.pearsonr(y, pred)[0]) if varied else float("nan")
        out["spearman"] = float(stats.spearmanr(y, pred)[0]) if varied else float("nan")
    return out


def bootstrap_intervals(
    score: Callable[[np.ndarray], dict[str, float]], n_items: int, n: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals (``<key>_ci95``) of ``score(index)`` over ``n`` resamples
    of ``n_items`` items with replacement; keys never finite are left out."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n if n_items else 0):
        for key, value in score(rng.integers(0, n_items, n_items)).items():
            draws.setdefault(key, []).append(value)
    return {
        f"{key}_ci95": [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
        for key, v in draws.items()
        if np.isfinite(v).any()
    }


def scored_with_intervals(
    y: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int, prefix: str = ""
) -> dict[str, Any]:
    """:func:`regression_scores` and their intervals, keys prefixed (``oof_``)."""
    out = regression_scores(y, pred) | bootstrap_intervals(
        lambda i: regression_scores(y[i], pred[i]), len(y), n_bootstrap, seed
    )
    return {f"{prefix}{k}": v for k, v in out.items()}


def ensemble_rows(folds: pd.DataFrame, scorer: Any, oof: pd.DataFrame, column: str) -> pd.DataFrame:
    """Test and predict-only bags by the fold models' mean answer (``column``, and
    ``fold_sd`` their spread), training bags out of fold, each with its ``target`` (and
    ``event`` where the bags have one) and ``slides``."""
    rows = []
    for bag in (b for b in bags_of(folds) if b.split != "train" or b.y < 0):
        per_fold, n_tiles = scorer.score(bag)
        values = np.asarray(per_fold, float)[:, 0]
        rows.append({"bag_id": bag.bag_id, "split": bag.split, "target": bag.target,
                     "event": bag.event, "scored_by": "ensemble", column: float(values.mean()),
                     "fold_sd": float(values.std()), "n_tiles": n_tiles})  # fmt: skip
    rows += [
        {"bag_id": r.bag_id, "split": "train", "target": r.target,
         "event": getattr(r, "event", -1), "scored_by": f"fold_{r.fold}",
         column: getattr(r, column), "fold_sd": np.nan}
        for r in oof.itertuples()
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    slides = folds.groupby("bag_id", sort=False).slide_id.agg(",".join)
    table.insert(1, "slides", table.bag_id.map(slides))
    return table


def outcome_ensemble(
    folds: pd.DataFrame,
    scorer: Any,
    model_paths: Sequence[str | Path],
    prediction_paths: Sequence[str | Path],
    *,
    n_bootstrap: int,
    seed: int,
    survival: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions and metrics of a numeric label (:func:`regression_ensemble`) or of
    survival (:func:`survival_ensemble`, with the ``mil`` keys ``survival``), as the fold
    models' task says; ``scorer`` is the ensemble's
    (:class:`histodetect.mil.ensemble.BagScorer`), each fold's answer ``(1,)``."""
    oof = read_oof(prediction_paths, model_paths)
    if scorer.meta["task"] == "survival":
        return survival_ensemble(folds, scorer, oof, n_bootstrap, seed, survival)
    return regression_ensemble(folds, scorer, oof, n_bootstrap, seed)


def regression_ensemble(
    folds: pd.DataFrame, scorer: Any, oof: pd.DataFrame, n_bootstrap: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions (test and predict-only bags by the fold models' mean, training bags out
    of fold, ``oof``) and metrics of a numeric label."""
    table = ensemble_rows(folds, scorer, oof, "prediction").drop(columns="event")
    table.insert(3, "label", [f"{t:g}" if np.isfinite(t) else "" for t in table.target])
    test = table[(table.split == "test") & table.target.notna()]
    metrics: dict[str, Any] = {
        "task": "regression",
        "classes": [],
        "model": scorer.meta["arch"]["kind"],
    }
    metrics |= {"regression_loss": scorer.meta.get("target", {}).get("regression_loss")}
    metrics |= {"n_test_bags": len(test), "n_oof_bags": len(oof)}
    metrics |= scored_with_intervals(
        test.target.to_numpy(float), test.prediction.to_numpy(float), n_bootstrap, seed
    )
    metrics |= scored_with_intervals(
        oof.target.to_numpy(float), oof.prediction.to_numpy(float), n_bootstrap, seed, "oof_"
    )
    return table, metrics


def survival_with_intervals(
    part: pd.DataFrame, n_bootstrap: int, seed: int, prefix: str = ""
) -> dict[str, Any]:
    """Harrell's and Uno's c-index of ``part``'s risks and their intervals, keys prefixed."""
    t, e, r = (part[c].to_numpy(float) for c in ("target", "event", "risk"))
    out = survival_scores(t, e, r) | bootstrap_intervals(
        lambda i: survival_scores(t[i], e[i], r[i]), len(t), n_bootstrap, seed
    )
    return {f"{prefix}{k}": v for k, v in out.items()}


def survival_options(survival: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`SURVIVAL_OPTIONS` overridden by the ``mil`` keys given (None: unset)."""
    given = {k: v for k, v in (survival or {}).items() if k in SURVIVAL_OPTIONS and v is not None}
    return SURVIVAL_OPTIONS | given


def group_record(oof_risk: Any, quantiles: Any) -> dict[str, Any]:
    """The risk groups as fixed out of fold: ``quantiles`` (null: the median), the ``cuts``
    (:func:`~histodetect.mil.survival_metrics.risk_cuts`) and the group ``names``, lowest
    risk first (a risk at a cut joins the group below); saved in ``decision.json`` for
    predict and in ``metrics.json``."""
    cuts = risk_cuts(oof_risk, quantiles)
    return {"quantiles": list(quantiles or [0.5]), "cuts": cuts,
            "names": group_names(len(cuts) + 1)}  # fmt: skip


def survival_ensemble(
    folds: pd.DataFrame,
    scorer: Any,
    oof: pd.DataFrame,
    n_bootstrap: int,
    seed: int,
    survival: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Risks (test and predict-only bags by the fold models' mean log risk, training bags out
    of fold, ``oof``), risk groups and metrics of ``mil.task: survival``; ``survival``: the
    ``mil`` keys of :data:`SURVIVAL_OPTIONS`.

    The groups are cut at quantiles of the out-of-fold risks (``risk_groups``; null: the
    median, ``low`` at or below and ``high`` above), fixed from the training bags before any
    test bag is grouped (:func:`group_record`). Metrics: ``cindex`` and ``cindex_uno`` of
    the test bags, ``oof_`` of the training bags, each with 95% bootstrap intervals; the
    cumulative/dynamic AUC at the ``horizons`` (``auc_t``; null: the quartiles of the
    training bags' event times) and the integrated Brier score (``ibs``) of the survival
    function ``exp(-H0(t) exp(risk))``, ``H0`` Breslow's on the out-of-fold risks, IPCW by
    the training bags' censoring (:func:`~histodetect.mil.survival_metrics.timed_scores`;
    ``oof_``: the training bags scored against their own baseline); each part's log-rank p
    of the groups (the multivariate test over more than two) and group sizes.
    """
    options = survival_options(survival)
    table = ensemble_rows(folds, scorer, oof, "risk")
    table.insert(3, "label", [f"{t:g}:{e}" if np.isfinite(t) else "" for t, e in
                              zip(table.target, table.event, strict=True)])  # fmt: skip
    groups = group_record(oof.risk, options["risk_groups"])
    table["risk_group"] = risk_groups(table.risk, groups["cuts"])
    test = table[(table.split == "test") & table.target.notna()]
    train = table[table.split == "train"]
    horizons = default_horizons(train.target, train.event, options["horizons"])
    median = float(np.median(oof.risk)) if len(oof) else float("nan")
    metrics: dict[str, Any] = {"task": "survival", "classes": [],
                               "model": scorer.meta["arch"]["kind"],
                               "ties": scorer.meta.get("config", {}).get("ties"),
                               "time_unit": options["time_unit"]}  # fmt: skip
    metrics |= {"n_test_bags": len(test), "n_oof_bags": len(oof), "risk_median": median,
                "n_test_events": int(test.event.sum()), "n_oof_events": int(train.event.sum())}  # fmt: skip
    metrics |= {"risk_groups": groups, "horizons": horizons}
    metrics |= survival_with_intervals(test, n_bootstrap, seed)
    metrics |= survival_with_intervals(train, n_bootstrap, seed, "oof_")
    metrics |= timed_scores(train, test, horizons)
    metrics |= {f"oof_{k}": v for k, v in timed_scores(train, train, horizons).items()}
    metrics |= {"logrank_p": logrank_p(test), "oof_logrank_p": logrank_p(train)}
    metrics |= {"group_sizes": {split: part.risk_group.value_counts().to_dict()
                                for split, part in (("test", test), ("oof", train))}}  # fmt: skip
    return table.rename(columns={"target": "time"}), metrics
