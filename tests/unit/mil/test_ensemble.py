"""The fold ensemble: predictions of every test bag, metrics beside the out-of-fold ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histodetect.errors import InputError
from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import FeatureSource
from histodetect.mil.ensemble import ensemble
from histodetect.mil.train import MilConfig, train_fold


def _cohort(folder: Path) -> pd.DataFrame:
    """30 one-slide bags of grade 0-2 (the grade is the number of tiles shifted by 6)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(30):
        grade, size = i % 3, int(rng.integers(20, 40))
        x = rng.normal(0, 1, (size, 6))
        x[:grade, 0] += 6
        sid = f"S{i:02d}"
        write_features(
            folder / f"{sid}.h5", SlideFeatures(x, np.zeros((size, 2)), {"status": "ok"})
        )
        split, fold = ("test", -1) if i >= 24 else ("train", i % 2)
        rows.append((sid, f"P{i:02d}", sid, f"P{i:02d}", str(grade), grade, split, fold))
    columns = ["slide_id", "patient_id", "bag_id", "group", "label", "y", "split", "fold"]
    return pd.DataFrame(rows, columns=columns)


def _two_folds_and_ensemble(
    folds: pd.DataFrame, source: FeatureSource, cfg: MilConfig, classes: list[str], tmp: Path
) -> tuple[pd.DataFrame, dict]:
    """Folds 0 and 1 trained under ``tmp``, then their ensemble (20 resamples)."""
    for k in (0, 1):
        out = tmp / f"fold_{k}"
        train_fold(folds, k, source, out, cfg, classes,
                   mlflow_uri=f"sqlite:///{tmp}/m.db", experiment="e", tb_dir=out / "tb")  # fmt: skip
    models = [tmp / f"fold_{k}" / "model.pt" for k in (0, 1)]
    preds = [tmp / f"fold_{k}" / "val_predictions.parquet" for k in (0, 1)]
    return ensemble(folds, models, preds, source, n_bootstrap=20)


def test_the_ensemble_scores_test_bags_and_reports_out_of_fold_figures(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folds = _cohort(tmp_path)
    source = FeatureSource(tmp_path)
    cfg = MilConfig(model="abmil", task="ordinal", hidden=16, epochs=3, lr=1e-3)
    table, metrics = _two_folds_and_ensemble(folds, source, cfg, ["0", "1", "2"], tmp_path)
    test = table[table.split == "test"]
    assert sorted(test.bag_id) == [f"S{i}" for i in range(24, 30)]
    assert np.allclose(test[["prob_0", "prob_1", "prob_2"]].sum(1), 1, atol=1e-5)
    assert set(test.fold_agreement) <= {0.0, 0.5, 1.0} and set(test.call) <= {"0", "1", "2"}
    assert sorted(table.scored_by[table.split == "train"].unique()) == ["fold_0", "fold_1"]
    assert np.array(metrics["confusion"]).sum() == 6 and metrics["n_oof_bags"] == 24
    assert {"auc", "balanced_accuracy", "qwk", "oof_auc", "oof_qwk", "qwk_ci95"} <= set(metrics)
    lo, hi = metrics["balanced_accuracy_ci95"]
    assert lo <= hi

    models = [tmp_path / f"fold_{k}" / "model.pt" for k in (0, 1)]
    preds = [tmp_path / f"fold_{k}" / "val_predictions.parquet" for k in (0, 1)]
    leaked = pd.read_parquet(preds[0])
    leaked.loc[0, "patient_id"] = folds.group[folds.fold == 1].iloc[0]  # a bag fold 0 trained on
    leaked.to_parquet(preds[0])
    with pytest.raises(InputError, match="not out of fold"):
        ensemble(folds, models, preds, source)


def _numeric_cohort(folder: Path) -> pd.DataFrame:
    """30 one-slide bags of 30 tiles whose number is 10 + 5 s, where 4 s tiles (s = 0-4) are
    shifted by 4 (their mean tells the number)."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(30):
        shifted, size = i % 5, 30
        x = rng.normal(0, 1, (size, 6))
        x[: 4 * shifted, 0] += 4
        sid = f"S{i:02d}"
        write_features(
            folder / f"{sid}.h5", SlideFeatures(x, np.zeros((size, 2)), {"status": "ok"})
        )
        split, fold = ("test", -1) if i >= 24 else ("train", i % 2)
        target = 10.0 + 5 * shifted
        rows.append((sid, f"P{i:02d}", sid, f"P{i:02d}", f"{target:g}", shifted % 4, split,
                     fold, target))  # fmt: skip
    columns = ["slide_id", "patient_id", "bag_id", "group", "label", "y", "split", "fold"]
    return pd.DataFrame(rows, columns=[*columns, "target"])


def test_a_numeric_label_is_learnt_and_scored_out_of_fold_and_on_test(tmp_path: Path) -> None:
    loss = "huber"
    torch.set_num_threads(1)
    folds = _numeric_cohort(tmp_path)
    source = FeatureSource(tmp_path)
    cfg = MilConfig(model="mean", task="regression", regression_loss=loss, hidden=16, epochs=25,
                    lr=2e-2)  # fmt: skip
    table, metrics = _two_folds_and_ensemble(folds, source, cfg, [], tmp_path)
    fold_metrics = json.loads((tmp_path / "fold_0" / "training_metrics.json").read_text())
    assert "val_mae" in fold_metrics and "val_auc" not in fold_metrics
    test = table[table.split == "test"]
    assert sorted(test.bag_id) == [f"S{i}" for i in range(24, 30)]
    assert (test.scored_by == "ensemble").all() and test.fold_sd.ge(0).all()
    oof = table[table.split == "train"]
    assert len(oof) == 24 and set(oof.scored_by) == {"fold_0", "fold_1"}
    keys = {"mae", "rmse", "r2", "pearson", "spearman"}
    assert keys | {f"oof_{k}" for k in keys} | {"mae_ci95", "oof_r2_ci95"} <= set(metrics)
    assert metrics["task"] == "regression" and metrics["regression_loss"] == loss
    print({k: round(metrics[k], 3) for k in ("mae", "oof_mae", "pearson", "oof_pearson")})
    # predicting the training mean (20) would be 6 off on average
    assert metrics["oof_pearson"] > 0.7 and metrics["oof_mae"] < 4.5 and metrics["mae"] < 4.5


def test_regression_scores_match_their_definitions() -> None:
    from scipy import stats

    from histodetect.mil.outcomes import regression_scores

    y, pred = np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.5, 1.5, 5.0, 7.0])
    got = regression_scores(y, pred)
    assert got["mae"] == pytest.approx(0.75)
    assert got["rmse"] == pytest.approx(np.sqrt((0.25 + 0.25 + 1 + 1) / 4))
    assert got["r2"] == pytest.approx(1 - 2.5 / ((y - y.mean()) ** 2).sum())
    assert got["pearson"] == pytest.approx(stats.pearsonr(y, pred)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(y, pred)[0])
    assert np.isnan(regression_scores(y, np.ones(4))["pearson"])


@pytest.mark.parametrize(
    ("loss", "expected"), [("l1", [1.0, 0.5]), ("mse", [1.0, 0.25]), ("huber", [0.5, 0.125])]
)
def test_the_regression_losses_compare_the_standardised_number(
    loss: str, expected: list[float]
) -> None:
    from histodetect.mil.models import MilTask

    task = MilTask("regression", [], loss, shift=10.0, scale=2.0)
    logits = torch.tensor([[1.0], [0.0]])  # predicts 12 and 10
    got = task.loss(logits, torch.tensor([10.0, 11.0]))  # z = 0 and 0.5
    assert got.tolist() == pytest.approx(expected)
    assert task.probs(logits)[:, 0].tolist() == [12.0, 10.0] and task.outputs == 1
