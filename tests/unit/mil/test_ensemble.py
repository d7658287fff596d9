"""The fold ensemble: predictions of every test bag, metrics beside the out-of-fold ones."""

from __future__ import annotations

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


def test_the_ensemble_scores_test_bags_and_reports_out_of_fold_figures(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folds = _cohort(tmp_path)
    source = FeatureSource(tmp_path)
    cfg = MilConfig(model="abmil", task="ordinal", hidden=16, epochs=3, lr=1e-3)
    paths = []
    for k in (0, 1):
        out = tmp_path / f"fold_{k}"
        train_fold(folds, k, source, out, cfg, ["0", "1", "2"],
                       mlflow_uri=f"sqlite:///{tmp_path}/m.db", experiment="e", tb_dir=out / "tb")  # fmt: skip
        paths.append(out)
    models = [p / "model.pt" for p in paths]
    preds = [p / "val_predictions.parquet" for p in paths]
    table, metrics = ensemble(folds, models, preds, source, n_bootstrap=20)
    test = table[table.split == "test"]
    assert sorted(test.bag_id) == [f"S{i}" for i in range(24, 30)]
    assert np.allclose(test[["prob_0", "prob_1", "prob_2"]].sum(1), 1, atol=1e-5)
    assert set(test.fold_agreement) <= {0.0, 0.5, 1.0} and set(test.call) <= {"0", "1", "2"}
    assert sorted(table.scored_by[table.split == "train"].unique()) == ["fold_0", "fold_1"]
    assert np.array(metrics["confusion"]).sum() == 6 and metrics["n_oof_bags"] == 24
    assert {"auc", "balanced_accuracy", "qwk", "oof_auc", "oof_qwk", "qwk_ci95"} <= set(metrics)
    lo, hi = metrics["balanced_accuracy_ci95"]
    assert lo <= hi

    leaked = pd.read_parquet(preds[0])
    leaked.loc[0, "patient_id"] = folds.group[folds.fold == 1].iloc[0]  # a bag fold 0 trained on
    leaked.to_parquet(preds[0])
    with pytest.raises(InputError, match="not out of fold"):
        ensemble(folds, models, preds, source)
