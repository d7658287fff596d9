"""Time-dependent scores and risk groups of ``mil.task: survival`` (torch-free).

- :func:`cumulative_dynamic_auc`: at a horizon ``t`` the cases are the bags with an event at
  or before ``t``, each weighted by ``1 / G(t_i)``, the controls those still followed after
  ``t``; the AUC is the weighted share of case-control pairs the risks order (ties a half)
  (Uno et al. 2007; Hung and Chiang 2010).
- :func:`brier_scores` and :func:`integrated_brier_score`: the squared error of a survival
  function at ``t`` with the same inverse probability of censoring weights (Graf et al.
  1999), integrated by the trapezoid rule over a grid and divided by its span.
- ``G`` (:func:`censoring_survival`) is the Kaplan-Meier estimate of the censoring
  distribution of the *training* bags (events leave the risk set before censorings at a
  tied time); the survival function (:func:`survival_function`) is
  ``S(t|x) = exp(-H0(t) exp(risk))``, ``H0`` Breslow's baseline cumulative hazard of the
  training bags' out-of-fold risks (:func:`breslow_hazard`).

These are small own implementations rather than scikit-survival's
``cumulative_dynamic_auc``, ``brier_score`` and ``integrated_brier_score``: scikit-survival
pins scikit-learn to one minor release (0.28: ``>=1.9,<1.10``) and brings ecos, osqp and
numexpr, a tight coupling of the runtime (and the rules' conda environments) for some forty
lines of formulas. It stays a test dependency: the unit tests check each function here
against it, weights, ties and step conventions included. Unlike it, a horizon or time
without a case or a control gives NaN instead of an exception (a small test set must not
stop the run).

Risk groups: cut points at quantiles (``mil.risk_groups``; null: the median) of the
out-of-fold risks, fixed before any test or new bag is grouped (:func:`risk_cuts`,
:func:`risk_groups`); the groups' log-rank p (two groups, or the multivariate test over
more) is :func:`logrank_p`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from lifelines.statistics import multivariate_logrank_test

QUARTILES = (0.25, 0.5, 0.75)
"""Default horizons: these quantiles of the training bags' event times."""
IBS_POINTS = 100
"""Evenly spaced times of the integrated Brier score's grid."""


def _arrays(*arrays: Any) -> list[np.ndarray]:
    return [np.asarray(a, float).reshape(-1) for a in arrays]


def censoring_survival(time: Any, event: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``G(t)``, the Kaplan-Meier probability of not yet being censored at ``t`` (right-
    continuous; 1 before the first time, the last value after the last), of the bags
    ``time, event``. At a time with both, the events leave the risk set first
    (scikit-survival's ``CensoringDistributionEstimator``)."""
    time, event = _arrays(time, event)
    steps, values = np.unique(time), []
    g = 1.0
    for t in steps:
        here = time == t
        censored = int((here & (event == 0)).sum())
        at_risk = int((time >= t).sum()) - int((here & (event == 1)).sum())
        if censored and at_risk > 0:
            g *= 1.0 - censored / at_risk
        values.append(g)
    values_a = np.asarray(values, float)

    def g_at(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, float)
        if not len(steps):
            return np.ones_like(t)
        i = np.searchsorted(steps, t, side="right") - 1
        return np.where(i >= 0, values_a[np.clip(i, 0, None)], 1.0)

    return g_at


def breslow_hazard(time: Any, event: Any, risk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's baseline cumulative hazard of the bags ``time, event`` with log risks
    ``risk``: its distinct event times and ``H0`` there,
    ``H0(t) = sum_{s <= t} d_s / sum_{j: t_j >= s} exp(risk_j)``."""
    time, event, risk = _arrays(time, event, risk)
    times = np.unique(time[event == 1])
    w = np.exp(risk)
    steps = [((time == s) & (event == 1)).sum() / w[time >= s].sum() for s in times]
    return times, np.cumsum(steps) if steps else np.zeros(0)


def survival_function(hazard: tuple[np.ndarray, np.ndarray], risk: Any, times: Any) -> np.ndarray:
    """``(bags, times)`` survival probabilities ``exp(-H0(t) exp(risk))`` of log risks
    ``risk`` on the step function ``hazard`` (:func:`breslow_hazard`; 0 before its first
    event)."""
    steps, h0 = hazard
    (risk,) = _arrays(risk)
    i = np.searchsorted(steps, np.asarray(times, float).reshape(-1), side="right") - 1
    h = np.where(i >= 0, h0[np.clip(i, 0, None)] if len(h0) else 0.0, 0.0)
    return np.exp(-np.outer(np.exp(risk), h))


def cumulative_dynamic_auc(
    train_time: Any, train_event: Any, time: Any, event: Any, risk: Any, horizons: Any
) -> np.ndarray:
    """The cumulative/dynamic AUC of ``risk`` at each horizon (higher risk: earlier event),
    weights ``1 / G(t_i)`` from the training bags' censoring; NaN at a horizon without a
    case or a control."""
    g = censoring_survival(train_time, train_event)
    time, event, risk = _arrays(time, event, risk)
    weight = np.zeros(len(time))
    seen = (event == 1) & (g(time) > 0)
    weight[seen] = 1.0 / g(time[seen])
    above = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    out = []
    for t in np.asarray(horizons, float).reshape(-1):
        case, control = (time <= t) & (event == 1), time > t
        den = weight[case].sum() * control.sum()
        num = (weight[case, None] * above[np.ix_(case, control)]).sum()
        out.append(num / den if den > 0 else np.nan)
    return np.asarray(out, float)


def brier_scores(
    train_time: Any, train_event: Any, time: Any, event: Any, surv: np.ndarray, times: Any
) -> np.ndarray:
    """The IPCW Brier score at each of ``times`` of the survival probabilities ``surv``
    ``(bags, times)``: a bag with its event by ``t`` weighs ``S^2 / G(t_i)``, one followed past
    ``t`` ``(1 - S)^2 / G(t)``, one censored by ``t`` nothing; the mean over all bags."""
    g = censoring_survival(train_time, train_event)
    time, event = _arrays(time, event)
    times = np.asarray(times, float).reshape(-1)
    with np.errstate(divide="ignore"):
        w_own = np.where(g(time) > 0, 1.0 / g(time), 0.0)
        w_t = np.where(g(times) > 0, 1.0 / g(times), 0.0)
    case = (time[:, None] <= times[None, :]) & (event[:, None] == 1)
    control = time[:, None] > times[None, :]
    terms = surv**2 * case * w_own[:, None] + (1 - surv) ** 2 * control * w_t[None, :]
    return terms.mean(0)


def integrated_brier_score(
    train_time: Any, train_event: Any, time: Any, event: Any, surv: np.ndarray, times: Any
) -> float:
    """:func:`brier_scores` integrated over ``times`` (trapezoids) divided by their span;
    NaN with fewer than two times."""
    times = np.asarray(times, float).reshape(-1)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    scores = brier_scores(train_time, train_event, time, event, surv, times)
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def default_horizons(time: Any, event: Any, horizons: Sequence[float] | None) -> list[float]:
    """``horizons`` as given, or the :data:`QUARTILES` of the event times of the bags
    ``time, event`` (the training bags'); none without an event."""
    if horizons:
        return [float(h) for h in horizons]
    time, event = _arrays(time, event)
    seen = time[event == 1]
    return [float(q) for q in np.quantile(seen, QUARTILES)] if len(seen) else []


def ibs_grid(train_time: Any, train_event: Any, time: Any, horizons: Sequence[float]) -> np.ndarray:
    """The integrated Brier score's times: :data:`IBS_POINTS` from the training bags' first
    event time to the last horizon, kept below the scored bags' last time ``time`` (no bag is
    followed past it)."""
    train_time, train_event, time = _arrays(train_time, train_event, time)
    seen = train_time[train_event == 1]
    if not len(seen) or not len(horizons) or not len(time):
        return np.zeros(0)
    grid = np.linspace(seen.min(), max(horizons), IBS_POINTS)
    return grid[grid < time.max()]


def timed_scores(
    train: pd.DataFrame, part: pd.DataFrame, horizons: Sequence[float]
) -> dict[str, Any]:
    """``auc_t`` (horizon, as text, to the cumulative/dynamic AUC) and ``ibs`` of ``part``'s
    risks (columns ``target``, ``event``, ``risk``), the censoring and the baseline hazard
    from ``train`` (the training bags, their risks out of fold)."""
    tt, te, tr = (train[c].to_numpy(float) for c in ("target", "event", "risk"))
    t, e, r = (part[c].to_numpy(float) for c in ("target", "event", "risk"))
    auc = cumulative_dynamic_auc(tt, te, t, e, r, horizons) if len(t) else [np.nan] * len(horizons)
    grid = ibs_grid(tt, te, t, horizons)
    surv = survival_function(breslow_hazard(tt, te, tr), r, grid)
    return {
        "auc_t": {f"{h:g}": float(a) for h, a in zip(horizons, auc, strict=True)},
        "ibs": integrated_brier_score(tt, te, t, e, surv, grid),
    }


def group_names(n_groups: int) -> list[str]:
    """``low, high``; ``low, mid, high``; else ``q1..qn`` (lowest risk first)."""
    named = {1: ["all"], 2: ["low", "high"], 3: ["low", "mid", "high"]}
    return named.get(n_groups, [f"q{i + 1}" for i in range(n_groups)])


def risk_cuts(oof_risk: Any, quantiles: Sequence[float] | None) -> list[float]:
    """The cut points: ``quantiles`` (null: the median) of the out-of-fold risks."""
    (risk,) = _arrays(oof_risk)
    qs = list(quantiles) if quantiles else [0.5]
    return [float(c) for c in np.quantile(risk, qs)] if len(risk) else [float("nan")] * len(qs)


def risk_groups(risk: Any, cuts: Sequence[float]) -> np.ndarray:
    """Each risk's group name (:func:`group_names`): a risk at a cut point joins the group
    below it."""
    (risk,) = _arrays(risk)
    index = np.searchsorted(np.asarray(cuts, float), risk, side="left")
    return np.asarray(group_names(len(cuts) + 1), object)[index]


def logrank_p(part: pd.DataFrame) -> float:
    """The log-rank p of ``part``'s risk groups (columns ``target``, ``event``,
    ``risk_group``; the multivariate test over more than two); NaN with fewer than two
    groups."""
    if part.risk_group.nunique() < 2:
        return float("nan")
    test = multivariate_logrank_test(
        part.target.to_numpy(float), part.risk_group.to_numpy(str), part.event.to_numpy(float)
    )
    return float(test.p_value)
