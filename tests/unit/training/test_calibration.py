"""Fold models calibrated on their own validation rows before thresholds are pooled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import random_model

from histodetect.errors import InputError
from histodetect.training.calibration import (
    Calibration,
    compare_methods,
    expected_calibration_error,
    fit_calibration,
    log_loss,
    read_calibration,
    write_calibration,
)
from histodetect.training.thresholds import write_threshold


def _fold_rows(fold: int, neg: np.ndarray, pos: np.ndarray) -> pd.DataFrame:
    n = len(neg) + len(pos)
    return pd.DataFrame(
        {
            "patient_id": [f"f{fold}p{i % 4}" for i in range(n)],
            "slide_id": [f"f{fold}s{i % 4}" for i in range(n)],
            "fold": fold,
            "label": np.r_[np.zeros(len(neg)), np.ones(len(pos))].astype(np.float32),
            "prob": np.r_[neg, pos].astype(np.float32),
        }
    )


@pytest.fixture
def two_folds(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Fold 0 spread out (negatives up to 0.6, positives 0.7-0.99, many rows); fold 1 a model
    whose probabilities are squeezed into 0.40-0.45 (negatives 0.40-0.42, positives 0.43-0.45)."""
    rng = np.random.default_rng(0)
    tables = [
        _fold_rows(0, rng.uniform(0.01, 0.6, 800), rng.uniform(0.7, 0.99, 200)),
        _fold_rows(1, rng.uniform(0.40, 0.42, 80), rng.uniform(0.43, 0.45, 20)),
    ]
    preds, models = [], []
    for k, table in enumerate(tables):
        folder = tmp_path / "models" / f"fold_{k}"
        folder.mkdir(parents=True)
        patients = [p for t in tables for p in t.patient_id.unique() if not p.startswith(f"f{k}")]
        models.append(
            random_model(
                folder / "model.pt", k, fold=k, train_patients=patients, classes=["0", "1"]
            )
        )
        table.to_parquet(folder / "val_predictions.parquet")
        preds.append(folder / "val_predictions.parquet")
    return preds, models


def test_squeezed_fold_separates_at_the_pooled_threshold_once_calibrated(
    two_folds: tuple[list[Path], list[Path]],
) -> None:
    preds, models = two_folds
    squeezed = pd.read_parquet(preds[1])
    positive = squeezed.label.to_numpy() == 1
    raw = write_threshold(preds, models, models[0].parent.parent / "raw.json")
    t_raw = raw["decision"]["threshold"]
    assert t_raw > 0.6 and (squeezed.prob < t_raw).all()  # raw: fold 1 finds nothing
    for pred, model in zip(preds, models, strict=True):
        write_calibration(pred, model, "platt", model.parent / "calibration.json")
    record = write_threshold(preds, models, models[0].parent.parent / "cal.json", calibrated=True)
    t = record["decision"]["threshold"]
    assert record["calibrated"] is True
    calibrated = read_calibration(models[1]).apply(squeezed.prob.to_numpy())
    assert (calibrated[positive] >= t).all() and (calibrated[~positive] < t).all()
    assert record["folds"]["fold_1"]["balanced_accuracy_at_oof_threshold"] == pytest.approx(1.0)
    # temperature keeps 0.5 fixed: probabilities all below 0.5 stay below it, whatever T
    temp = fit_calibration(squeezed.label, squeezed.prob, "temperature")
    assert (temp.apply(squeezed.prob.to_numpy()) < 0.5).all()


def test_temperature_undoes_a_known_sharpening() -> None:
    rng = np.random.default_rng(1)
    logit = rng.normal(0, 2, 5000)
    y = (rng.uniform(size=5000) < 1 / (1 + np.exp(-logit))).astype(int)
    overconfident = 1 / (1 + np.exp(-3 * logit))  # the model's logits are 3x too large
    cal = fit_calibration(y, overconfident, "temperature")
    assert cal.temperature == pytest.approx(3.0, rel=0.1)
    assert log_loss(y, cal.apply(overconfident)) < log_loss(y, overconfident) - 0.05
    assert expected_calibration_error(y, cal.apply(overconfident)) < 0.03
    assert expected_calibration_error(y, overconfident) > 0.05


def test_multiclass_temperature_keeps_the_argmax() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (600, 3))
    y = logits.argmax(1)
    y[::4] = rng.integers(0, 3, 150)  # some noise: a finite temperature
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cal = fit_calibration(y, probs, "temperature")
    out = cal.apply(probs)
    assert cal.temperature < 1.0  # the labels follow the argmax more than the softmax says
    np.testing.assert_array_equal(out.argmax(1), probs.argmax(1))
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-9)
    assert log_loss(y, out) < log_loss(y, probs)
    with pytest.raises(ValueError, match="binary"):
        fit_calibration(y, probs, "platt")


def test_one_class_rows_fit_nothing_and_say_so() -> None:
    cal = fit_calibration(np.zeros(10), np.linspace(0.1, 0.3, 10), "temperature")
    assert cal.method == "none" and cal.fit["skipped_one_class"] == 1.0


def test_torch_path_matches_numpy_path() -> None:
    import torch

    p = np.linspace(0.02, 0.98, 9)
    logits = torch.tensor(np.log(p / (1 - p)), dtype=torch.float64)[:, None]
    iso = Calibration("isotonic", knots_x=[0.0, 0.5, 1.0], knots_y=[0.1, 0.2, 0.9])
    for cal in (Calibration("temperature", 2.0), Calibration("platt", 1.0, 0.5, -1.0), iso):
        got = cal.probs_from_logits(logits, multiclass=False)[:, 0].numpy()
        np.testing.assert_allclose(got, cal.apply(p), rtol=1e-6)


def test_missing_or_bad_calibration_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "fold_0").mkdir()
    model = random_model(tmp_path / "fold_0" / "model.pt", 0)
    with pytest.raises(InputError, match=r"fold_0/calibration.json: missing"):
        read_calibration(model)
    (tmp_path / "fold_0" / "calibration.json").write_text(json.dumps({"method": "magic"}))
    with pytest.raises(InputError, match="not a calibration record"):
        read_calibration(model)


def test_compare_methods_scores_each_slide_by_a_map_fitted_without_it() -> None:
    rng = np.random.default_rng(3)
    logit = rng.normal(-1, 2, 2000)
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-logit))).astype(int)
    table = pd.DataFrame(
        {"label": y, "prob": 1 / (1 + np.exp(-(2.5 * logit + 1))), "slide_id": np.arange(2000) % 3}
    )
    scores = compare_methods(table).set_index("method")
    assert set(scores.index) == {"temperature", "platt", "isotonic", "none"}
    assert scores.loc["platt", "nll"] < scores.loc["temperature", "nll"] < scores.loc["none", "nll"]
    assert scores.loc["platt", "ece"] < scores.loc["none", "ece"]


def test_a_multiclass_model_asked_for_platt_gets_temperature(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (300, 3))
    y = logits.argmax(1)
    y[::3] = rng.integers(0, 3, 100)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    table = pd.DataFrame({"label": y, "fold": 0, **{f"prob_{k}": probs[:, k] for k in range(3)}})
    table.to_parquet(tmp_path / "val.parquet")
    model = random_model(tmp_path / "model.pt", 0, fold=0)
    cal = write_calibration(tmp_path / "val.parquet", model, "platt", tmp_path / "calibration.json")
    assert cal.method == "temperature" and cal.fit["fallback_from_platt"] == 1.0
    assert cal.temperature > 1.0  # the noisy labels: the logits are overconfident
    assert read_calibration(model) == cal
