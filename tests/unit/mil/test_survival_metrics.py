"""Time-dependent AUC, Brier scores, Breslow's baseline hazard and the risk groups of
``mil.task: survival``, each checked against scikit-survival or lifelines (test
dependencies, not the package's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test, multivariate_logrank_test
from sksurv import metrics
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.nonparametric import CensoringDistributionEstimator

from histodetect.mil.survival_metrics import (
    breslow_hazard,
    brier_scores,
    censoring_survival,
    cumulative_dynamic_auc,
    default_horizons,
    group_names,
    ibs_grid,
    integrated_brier_score,
    logrank_p,
    risk_cuts,
    risk_groups,
    survival_function,
    timed_scores,
)


def _cohort(seed: int, n: int, whole: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    time = rng.exponential(10 * np.exp(-x))
    time = np.ceil(time) if whole else time  # whole units: ties of events and censorings
    event = (rng.random(n) < 0.65).astype(int)
    return x + rng.normal(0, 0.5, n), time, event


def _y(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return np.array(list(zip(event.astype(bool), time, strict=True)), [("e", bool), ("t", float)])


@pytest.mark.parametrize("whole", [False, True])
def test_censoring_weights_are_scikit_survivals(whole: bool) -> None:
    _, time, event = _cohort(1, 60, whole)
    at = np.r_[time, time.min() - 1, np.median(time)]
    at = at[at < time.max()]
    ref = CensoringDistributionEstimator().fit(_y(time, event)).predict_proba(at)
    assert censoring_survival(time, event)(at) == pytest.approx(ref)


@pytest.mark.parametrize("whole", [False, True])
def test_time_dependent_auc_is_scikit_survivals(whole: bool) -> None:
    risk, time, event = _cohort(2, 80, whole)
    train, test = slice(0, 50), slice(50, 80)
    horizons = np.quantile(time[test][event[test] == 1], [0.25, 0.5, 0.75])
    risk[test][:4] = risk[test][0]  # tied risks count a half
    ref, _ = metrics.cumulative_dynamic_auc(
        _y(time[train], event[train]), _y(time[test], event[test]), risk[test], horizons
    )
    ours = cumulative_dynamic_auc(
        time[train], event[train], time[test], event[test], risk[test], horizons
    )
    assert ours == pytest.approx(ref)
    assert np.isnan(cumulative_dynamic_auc(time, event, time, event, risk, [0.0])[0])  # no case


def test_breslow_hazard_and_survival_are_scikit_survivals() -> None:
    risk, time, event = _cohort(3, 50, whole=True)
    ref = BreslowEstimator().fit(risk, event, time)
    steps, h0 = breslow_hazard(time, event, risk)
    assert h0 == pytest.approx(ref.cum_baseline_hazard_(steps))
    at = np.linspace(time.min(), time.max() - 1e-6, 7)
    expected = np.stack([f(at) for f in ref.get_survival_function(risk[:5])])
    assert survival_function((steps, h0), risk[:5], at) == pytest.approx(expected)
    assert survival_function((steps, h0), risk[:2], [steps[0] - 1]) == pytest.approx(1.0)


@pytest.mark.parametrize("whole", [False, True])
def test_brier_and_integrated_brier_are_scikit_survivals(whole: bool) -> None:
    risk, time, event = _cohort(4, 90, whole)
    train, test = slice(0, 60), slice(60, 90)
    tt, te = time[train], event[train]
    grid = ibs_grid(tt, te, time[test], [float(np.quantile(tt, 0.7))])
    grid = grid[(grid >= time[test].min()) & (grid < tt.max())]  # scikit-survival's range
    surv = survival_function(breslow_hazard(tt, te, risk[train]), risk[test], grid)
    ys = _y(tt, te), _y(time[test], event[test])
    _, ref = metrics.brier_score(*ys, surv, grid)
    assert brier_scores(tt, te, time[test], event[test], surv, grid) == pytest.approx(ref)
    ibs = integrated_brier_score(tt, te, time[test], event[test], surv, grid)
    assert ibs == pytest.approx(metrics.integrated_brier_score(*ys, surv, grid))
    assert 0 < ibs < 0.25  # better than a coin's 0.25
    assert np.isnan(integrated_brier_score(tt, te, time[test], event[test], surv[:, :1], grid[:1]))


def test_horizons_default_to_the_quartiles_of_training_event_times() -> None:
    time, event = np.array([1.0, 2, 3, 4, 5, 100]), np.array([1, 1, 1, 1, 1, 0])
    assert default_horizons(time, event, None) == [2.0, 3.0, 4.0]
    assert default_horizons(time, event, [12, 24]) == [12.0, 24.0]
    assert default_horizons(time, np.zeros(6), None) == []


def test_timed_scores_of_a_perfect_and_a_reversed_risk() -> None:
    _, time, event = _cohort(5, 120)
    train = pd.DataFrame({"target": time[:80], "event": event[:80], "risk": -np.log(time[:80])})
    part = pd.DataFrame({"target": time[80:], "event": event[80:], "risk": -np.log(time[80:])})
    horizons = default_horizons(train.target, train.event, None)
    good = timed_scores(train, part, horizons)
    bad = timed_scores(train, part.assign(risk=-part.risk), horizons)
    assert list(good["auc_t"]) == [f"{h:g}" for h in horizons]
    assert all(v == pytest.approx(1.0) for v in good["auc_t"].values())
    assert all(v == pytest.approx(0.0) for v in bad["auc_t"].values())
    assert good["ibs"] < bad["ibs"]
    empty = timed_scores(train, part.iloc[:0], horizons)
    assert np.isnan(empty["ibs"]) and all(np.isnan(v) for v in empty["auc_t"].values())


def test_risk_groups_cut_at_out_of_fold_quantiles() -> None:
    oof = np.arange(1.0, 11.0)  # 1..10
    assert risk_cuts(oof, None) == [5.5]
    cuts = risk_cuts(oof, [1 / 3, 2 / 3])
    assert cuts == pytest.approx([4.0, 7.0])
    groups = risk_groups([0.0, 4.0, 4.5, 7.0, 7.1, 99.0], cuts)
    assert list(groups) == ["low", "low", "mid", "mid", "high", "high"]  # a cut joins below
    assert list(risk_groups([5.5, 5.6], [5.5])) == ["low", "high"]
    assert group_names(4) == ["q1", "q2", "q3", "q4"]
    assert np.isnan(risk_cuts([], [0.5])[0])


def test_logrank_p_is_lifelines_two_and_multivariate() -> None:
    risk, time, event = _cohort(6, 90)
    part = pd.DataFrame({"target": time, "event": event})
    two = part.assign(risk_group=risk_groups(risk, risk_cuts(risk, None)))
    high, low = two[two.risk_group == "high"], two[two.risk_group == "low"]
    ref = logrank_test(high.target, low.target, high.event, low.event).p_value
    assert logrank_p(two) == pytest.approx(ref)
    three = part.assign(risk_group=risk_groups(risk, risk_cuts(risk, [0.33, 0.67])))
    ref3 = multivariate_logrank_test(three.target, three.risk_group, three.event).p_value
    assert logrank_p(three) == pytest.approx(ref3) and logrank_p(three) < 0.05
    assert np.isnan(logrank_p(two.assign(risk_group="low")))
