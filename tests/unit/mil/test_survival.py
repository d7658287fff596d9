"""Survival (``mil.task: survival``): the Cox loss (Breslow's and Efron's ties) against
lifelines, the c-indices against known values, and predict's risks and groups of new bags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from histodetect.errors import InputError
from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import FeatureSource
from histodetect.mil.models import MilTask
from histodetect.mil.predict import load_ensemble, predict_bag_table, predict_bags
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


class _MeanModel:
    """A fold model whose output is its weight times the bag's mean first feature."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return x[:, :1].mean(0, keepdim=True) * self.weight, torch.ones(len(x)), None


def _new_bags(tmp_path) -> tuple[pd.DataFrame, FeatureSource]:
    """Bags p1 (slides a, b), p2 (c) and p3 (d, which failed) of a prediction sheet."""
    means = {"a": 1.0, "b": 3.0, "c": -2.0}
    for sid, mean in means.items():
        x = np.full((4, 3), mean)
        attrs = {"status": "ok", "encoder_id": "enc", "size0": 64}
        write_features(tmp_path / f"{sid}.h5", SlideFeatures(x, np.zeros((4, 2)), attrs))
    sheet = pd.DataFrame({"slide_id": list("abcd"), "patient_id": ["p1", "p1", "p2", "p3"]})
    tiling = pd.DataFrame({"slide_id": list("abcd"), "status": ["ok"] * 3 + ["failed"],
                           "error": ["", "", "", "unreadable"]})  # fmt: skip
    paths = {s: tmp_path / f"{s}.h5" for s in means}
    table = predict_bag_table(sheet, "patient", tiling, paths, "sheet.tsv")
    return table, FeatureSource(tmp_path, {"encoder_id": "enc"})


def test_predict_gives_new_bags_a_risk_and_the_group_cut_out_of_fold(tmp_path) -> None:
    bag_table, source = _new_bags(tmp_path)
    task = MilTask("survival", [])
    loaded = [(_MeanModel(1.0), task, {}), (_MeanModel(0.5), task, {})]
    record = {"task": "survival", "risk_groups": {"cuts": [-1.0, 1.0],
                                                  "names": ["low", "mid", "high"]}}  # fmt: skip
    table = predict_bags(bag_table, loaded, record, source)  # type: ignore[arg-type]
    assert list(table.columns) == ["bag_id", "slides", "n_slides", "n_tiles", "risk",
                                   "risk_group", "fold_sd", "slides_left_out"]  # fmt: skip
    assert list(table.bag_id) == ["p1", "p2"]  # p3: none of its slides extracted
    # p1: mean feature 2 -> fold risks 2 and 1; p2: -2 -> -2 and -1
    assert table.risk.tolist() == pytest.approx([1.5, -1.5])
    assert table.fold_sd.tolist() == pytest.approx([0.5, 0.5])
    assert table.risk_group.tolist() == ["high", "low"] and table.n_tiles.tolist() == [8, 4]
    record["risk_groups"]["cuts"] = [1.5, 2.0]  # a risk at a cut joins the group below
    assert predict_bags(bag_table, loaded, record, source).risk_group.tolist() == ["low"] * 2


def test_predict_gives_new_bags_a_number_for_regression(tmp_path) -> None:
    bag_table, source = _new_bags(tmp_path)
    task = MilTask("regression", [], "mse", 10.0, 2.0)  # the number: output * 2 + 10
    loaded = [(_MeanModel(1.0), task, {})]
    table = predict_bags(bag_table, loaded, {"task": "regression"}, source)
    assert table.prediction.tolist() == pytest.approx([14.0, 6.0]) and "risk" not in table


def test_predict_reads_an_outcome_record_and_refuses_one_without_groups(tmp_path) -> None:
    path = tmp_path / "decision.json"
    record = {"decision": None, "task": "survival", "classes": [],
              "risk_groups": {"cuts": [0.0], "names": ["low", "high"]}}  # fmt: skip
    path.write_text(json.dumps(record))
    assert load_ensemble([], path, "enc") == ([], record)
    path.write_text(json.dumps({"decision": None, "task": "survival", "classes": []}))
    with pytest.raises(InputError) as err:
        load_ensemble([], path, "enc")
    assert str(err.value) == (
        f"{path}: a survival decision record without risk_groups (made before predict of "
        "survival was built): run target mil of that run again"
    )


def test_an_unknown_ties_method_is_refused() -> None:
    with pytest.raises(ValueError, match="ties 'exact'"):
        cox_loss(*_tensors([0.1, 0.2], [1.0, 2.0], [1, 1]), ties="exact")
