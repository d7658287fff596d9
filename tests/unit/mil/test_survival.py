"""Survival (``mil.task: survival``): the Cox loss against lifelines, the c-indices against
known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from histodetect.mil.survival import cox_loss, harrell_cindex, uno_cindex


def _tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(np.asarray(a, float), dtype=torch.float64) for a in arrays]


def test_the_cox_loss_is_lifelines_partial_log_likelihood_per_event() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    time = rng.exponential(np.exp(-x)).round(6)  # no ties: Efron (lifelines) is Breslow
    event = (rng.random(30) < 0.7).astype(int)
    fit = CoxPHFitter().fit(pd.DataFrame({"x": x, "T": time, "E": event}), "T", "E")
    loss = cox_loss(*_tensors(fit.params_["x"] * x, time, event))
    assert -float(loss) * event.sum() == pytest.approx(fit.log_likelihood_, rel=1e-9)


def test_tied_event_times_share_one_risk_set_as_breslow_has_it() -> None:
    risk, time, event = _tensors([0.5, -1.0, 2.0], [1.0, 1.0, 2.0], [1, 1, 0])
    r = risk.numpy()
    breslow = r[0] + r[1] - 2 * np.log(np.exp(r).sum())  # both tied events: all 3 at risk
    assert -float(cox_loss(risk, time, event, "breslow")) * 2 == pytest.approx(breslow)


def test_efron_ties_are_lifelines_partial_log_likelihood() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    time = np.ceil(rng.exponential(3 * np.exp(-x)))  # whole units: many tied times
    event = (rng.random(40) < 0.7).astype(int)
    assert pd.Series(time[event == 1]).duplicated().any()
    fit = CoxPHFitter().fit(pd.DataFrame({"x": x, "T": time, "E": event}), "T", "E")
    risk = fit.params_["x"] * x
    loss = cox_loss(*_tensors(risk, time, event), ties="efron")
    assert -float(loss) * event.sum() == pytest.approx(fit.log_likelihood_, rel=1e-9)
    breslow = cox_loss(*_tensors(risk, time, event), ties="breslow")
    assert float(breslow) > float(loss)  # Breslow's risk sets are larger at ties


def test_efron_on_a_small_tied_example_by_hand() -> None:
    risk, time, event = _tensors([0.5, -1.0, 2.0, 0.3], [1.0, 1.0, 1.0, 2.0], [1, 1, 0, 1])
    e = np.exp(risk.numpy())
    tied = e[0] + e[1]  # the two events at time 1; bag 2 censored at 1 stays at risk
    first, second = np.log(e.sum()), np.log(e.sum() - tied / 2)
    by_hand = 0.5 - 1.0 - first - second + (0.3 - np.log(e[3]))
    assert -float(cox_loss(risk, time, event, "efron")) * 3 == pytest.approx(by_hand)
    assert float(cox_loss(risk, time, event, "efron")) == pytest.approx(
        float(cox_loss(risk.flip(0), time.flip(0), event.flip(0), "efron"))
    )  # the order of the bags does not matter


def test_a_batch_without_an_event_has_zero_loss_and_still_a_graph() -> None:
    risk = torch.tensor([0.3, 0.1], requires_grad=True)
    loss = cox_loss(risk, torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    loss.backward()
    assert loss.item() == 0 and risk.grad is not None


def test_the_loss_falls_as_the_risks_order_the_events() -> None:
    time, event = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 1.0, 0.0, 1.0])
    right, wrong = torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert float(cox_loss(right, time, event)) < float(cox_loss(wrong, time, event))


TIME = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
EVENT = np.array([1, 0, 1, 1, 0, 1, 0, 1])
RISK = np.array([0.9, 0.5, 0.8, 0.3, 0.4, 0.2, 0.1, 0.35])


def test_harrell_and_uno_match_known_values() -> None:
    # scikit-survival 0.28: concordance_index_censored 0.8333..., concordance_index_ipcw
    # (the same bags as the censoring's) 0.786547085201794
    assert harrell_cindex(TIME, EVENT, RISK) == pytest.approx(5 / 6)
    assert uno_cindex(TIME, EVENT, RISK) == pytest.approx(0.786547085201794)
    assert uno_cindex(TIME, np.ones(8), RISK) == pytest.approx(
        harrell_cindex(TIME, np.ones(8), RISK)
    )  # without censoring both are the plain concordance
    assert np.isnan(harrell_cindex(TIME[:2], [0, 0], RISK[:2]))
    assert np.isnan(uno_cindex(TIME[:1], EVENT[:1], RISK[:1]))


def test_uno_matches_scikit_survival() -> None:
    from sksurv import metrics  # the reference (a test dependency, not the package's)

    rng = np.random.default_rng(4)
    x = rng.normal(size=40)
    time, event = rng.exponential(np.exp(-x)), (rng.random(40) < 0.6)
    y = np.array(list(zip(event, time, strict=True)), dtype=[("e", bool), ("t", float)])
    assert uno_cindex(time, event, x) == pytest.approx(metrics.concordance_index_ipcw(y, y, x)[0])


def test_predict_of_new_slides_refuses_survival_in_one_line(tmp_path) -> None:
    import json

    from histodetect.errors import InputError
    from histodetect.mil.predict import load_ensemble

    path = tmp_path / "decision.json"
    path.write_text(json.dumps({"decision": None, "task": "survival", "classes": []}))
    with pytest.raises(InputError) as err:
        load_ensemble([], path, "enc")
    assert str(err.value) == f"{path}: mil.task survival: predict of new slides is not offered yet"
