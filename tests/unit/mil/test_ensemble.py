"""The fold ensemble: predictions of every test bag, metrics beside the out-of-fold ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histodetect.errors import InputError
from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.ensemble import ensemble, write_decision
from histodetect.mil.models import load_mil_model, score_bag
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


def _shifted_cohort(
    folder: Path, n: int, n_test: int, size: int, seed: int,
    outcome: Callable[[int, np.random.Generator], tuple], extra: list[str],
) -> pd.DataFrame:  # fmt: skip
    """``n`` one-slide bags (the last ``n_test`` on test, the others in folds 0 and 1) of
    ``size`` tiles, ``4 s`` of them shifted by 4 (``s = i % 5``); ``outcome(s, rng)`` gives
    each bag's label, stratum and ``extra`` columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        shifted = i % 5
        x = rng.normal(0, 1, (size, 6))
        x[: 4 * shifted, 0] += 4
        sid = f"S{i:02d}"
        write_features(
            folder / f"{sid}.h5", SlideFeatures(x, np.zeros((size, 2)), {"status": "ok"})
        )
        split, fold = ("test", -1) if i >= n - n_test else ("train", i % 2)
        label, y, *more = outcome(shifted, rng)
        rows.append((sid, f"P{i:02d}", sid, f"P{i:02d}", label, y, split, fold, *more))
    columns = ["slide_id", "patient_id", "bag_id", "group", "label", "y", "split", "fold"]
    return pd.DataFrame(rows, columns=[*columns, *extra])


def _numeric_cohort(folder: Path) -> pd.DataFrame:
    """30 one-slide bags of 30 tiles whose number is 10 + 5 s, where 4 s tiles (s = 0-4) are
    shifted by 4 (their mean tells the number)."""

    def number(shifted: int, rng: np.random.Generator) -> tuple:
        target = 10.0 + 5 * shifted
        return f"{target:g}", shifted % 4, target

    return _shifted_cohort(folder, 30, 6, 30, 2, number, ["target"])


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


def _survival_cohort(folder: Path) -> pd.DataFrame:
    """40 one-slide patients of 20 tiles, 4 s of them shifted by 4 (s = 0-4), each with a time
    drawn from the hazard exp(s), about a quarter censored at random."""

    def outcome(shifted: int, rng: np.random.Generator) -> tuple:
        t, c = rng.exponential(np.exp(-shifted)), rng.exponential(0.4)
        event = int(t <= c)
        return f"{min(t, c):g}:{event}", event, min(t, c), event

    return _shifted_cohort(folder, 40, 10, 20, 3, outcome, ["target", "event"])


def test_survival_is_learnt_with_the_cox_loss_and_grouped_at_the_oof_median(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    folds = _survival_cohort(tmp_path)
    source = FeatureSource(tmp_path)
    cfg = MilConfig(model="abmil", task="survival", hidden=16, epochs=15, lr=1e-2, batch_bags=8)
    table, metrics = _two_folds_and_ensemble(folds, source, cfg, [], tmp_path)
    fold_metrics = json.loads((tmp_path / "fold_0" / "training_metrics.json").read_text())
    assert "val_cindex" in fold_metrics and "val_auc" not in fold_metrics
    model, task, _ = load_mil_model(tmp_path / "fold_0" / "model.pt")
    trained = [b for b in bags_of(folds) if b.split == "train" and b.fold == 1]
    risks = [score_bag(model, task, source.bag(b))[0][0] for b in trained]
    assert abs(np.mean(risks)) < 1e-4  # centred on the bags it trained on
    assert {"time", "event", "risk", "risk_group", "fold_sd"} <= set(table.columns)
    oof, test = table[table.split == "train"], table[table.split == "test"]
    assert len(oof) == 30 and len(test) == 10 and (test.scored_by == "ensemble").all()
    median = np.median(oof.risk)
    assert metrics["risk_median"] == pytest.approx(median)
    assert ((table.risk > median) == (table.risk_group == "high")).all()
    keys = {"cindex", "cindex_uno", "logrank_p"}
    assert keys | {f"oof_{k}" for k in keys} | {"cindex_ci95", "oof_cindex_uno_ci95"} <= set(
        metrics
    )
    assert metrics["task"] == "survival" and metrics["n_oof_events"] == int(oof.event.sum())
    print(
        {k: round(metrics[k], 3) for k in ("cindex", "cindex_uno", "oof_cindex", "oof_cindex_uno")}
    )
    assert metrics["oof_cindex"] > 0.65 and metrics["cindex"] > 0.65
    horizons = metrics["horizons"]
    assert metrics["ties"] == "efron" and metrics["time_unit"] == "days" and len(horizons) == 3
    seen = np.sort(oof.time[oof.event == 1])
    assert horizons == pytest.approx(np.quantile(seen, [0.25, 0.5, 0.75]))
    assert list(metrics["auc_t"]) == list(metrics["oof_auc_t"]) == [f"{h:g}" for h in horizons]
    assert np.mean(list(metrics["oof_auc_t"].values())) > 0.65
    assert 0 < metrics["oof_ibs"] < 0.25 and 0 < metrics["ibs"] < 0.25  # a coin: 0.25
    assert metrics["risk_groups"]["names"] == ["low", "high"]
    assert metrics["group_sizes"]["oof"] == oof.risk_group.value_counts().to_dict()
    # three groups at out-of-fold tertiles, and given horizons in months
    models = [tmp_path / f"fold_{k}" / "model.pt" for k in (0, 1)]
    preds = [tmp_path / f"fold_{k}" / "val_predictions.parquet" for k in (0, 1)]
    options = {"risk_groups": [1 / 3, 2 / 3], "horizons": [0.1, 0.3], "time_unit": "months"}
    again, three = ensemble(folds, models, preds, source, n_bootstrap=0, survival=options)
    cuts = np.quantile(oof.risk, [1 / 3, 2 / 3])
    assert three["risk_groups"]["cuts"] == pytest.approx(cuts)
    assert three["risk_groups"]["names"] == ["low", "mid", "high"]
    expected = np.select([again.risk <= cuts[0], again.risk <= cuts[1]], ["low", "mid"], "high")
    assert (again.risk_group == expected).all()
    assert list(three["auc_t"]) == ["0.1", "0.3"] and three["time_unit"] == "months"
    assert np.isfinite(three["oof_logrank_p"]) and "cindex_ci95" not in three
    record = write_decision(models, preds, tmp_path / "decision.json", options)
    assert record["risk_groups"] == three["risk_groups"] and record["time_unit"] == "months"


def test_clam_sb_learns_a_number_without_its_class_clustering(tmp_path: Path) -> None:
    """CLAM-SB's instance clustering needs a bag's class: a numeric label trains the bag head
    alone (its instance heads are empty; the clustering loss once indexed them)."""
    torch.set_num_threads(1)
    folds = _numeric_cohort(tmp_path)
    cfg = MilConfig(model="clam_sb", task="regression", hidden=16, epochs=2, lr=1e-2)
    out = tmp_path / "fold_0"
    metrics = train_fold(folds, 0, FeatureSource(tmp_path), out, cfg, [],
                         mlflow_uri=f"sqlite:///{tmp_path}/m.db", experiment="e",
                         tb_dir=out / "tb")  # fmt: skip
    assert np.isfinite(metrics["val_loss"]) and (out / "model.pt").exists()
