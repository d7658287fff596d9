"""Patch mode: a labels.csv of real LC25000 patches through folds, training and the summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from _workflow import snakemake, write_config

from histodetect.fit.model import load_model


@pytest.fixture(scope="module")
def patch_run(module_dir: Callable[[str], Path], real_data: Callable[[str], Path]) -> Path:
    """60 groups (20 per class), 2 patches each, relative paths; 2 folds, 1 epoch, 64 px."""
    workdir = module_dir("patch_run")
    labels = pd.read_csv(real_data("lc25000_lung/labels.csv"))
    groups = labels.drop_duplicates("group_id").groupby("label").head(20).group_id
    subset = labels[labels.group_id.isin(groups)].groupby("group_id").head(2)
    data = workdir / "patches"
    for path in subset.path:  # the 120 patches registered in histodetect/testdata_registry.txt
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).symlink_to(real_data(f"lc25000_lung/{path}"))
    subset[["path", "label", "group_id"]].to_csv(data / "labels.csv", index=False)
    overrides = {
        "folds": 2,
        "patches": {"labels": str(data / "labels.csv"), "tile_px": 64},
        "train": {"backbone": "resnet18", "epochs": 1, "batch_size": 32, "num_workers": 1},
    }
    write_config(workdir, overrides)
    snakemake(workdir, "train_patches")
    return workdir


def test_folds_are_grouped(patch_run: Path) -> None:
    folds = pd.read_csv(patch_run / "results/patches/folds.tsv", sep="\t", dtype=str)
    assert len(folds) == 120 and folds.group_id.nunique() == 60
    assert (folds.groupby("group_id").fold.nunique() == 1).all()
    assert sorted(folds.fold.unique()) == ["0", "1"]
    for k in (0, 1):
        train = pd.read_parquet(patch_run / f"results/folds/fold_{k}/train.parquet")
        val = pd.read_parquet(patch_run / f"results/folds/fold_{k}/val.parquet")
        assert not set(train.patient_id) & set(val.patient_id)
        assert len(train) + len(val) == 120 and set(val.fold) == {k}
        assert "x" not in train.columns and (train.tile_px == 64).all()


def test_models_and_summary(patch_run: Path) -> None:
    for k in (0, 1):
        model, meta = load_model(patch_run / f"results/models/fold_{k}/model.pt")
        assert meta["classes"] == ["lung_aca", "lung_n", "lung_scc"] and meta["loss"] == "ce"
        assert meta["tile_px"] == 64 and model.head[-1].out_features == 3
        metrics = json.loads((patch_run / f"results/models/fold_{k}/metrics.json").read_text())
        for how in ("argmax", "oof_priors"):  # the plain argmax, and with the out-of-fold priors
            assert 0 <= metrics[f"patch_balanced_accuracy_at_{how}"] <= 1
        assert {"patch_recall_lung_n_at_argmax", "patch_auc_lung_scc"} <= set(metrics)
        assert {"patch_recall_lung_n_at_oof_priors", "oof_prior_lung_n"} <= set(metrics)
    summary = pd.read_csv(patch_run / "results/models/summary.tsv", sep="\t")
    assert list(summary.fold) == ["fold_0", "fold_1", "mean", "std"]
    for how in ("argmax", "oof_priors"):
        assert summary[f"patch_balanced_accuracy_at_{how}"].between(0, 1).all()
    record = json.loads((patch_run / "results/models/threshold.json").read_text())
    assert record["n_rows"] == 120 and len(record["decision"]["priors"]) == 3
    for k in (0, 1):
        oof = pd.read_parquet(patch_run / f"results/models/fold_{k}/val_predictions.parquet")
        assert set(oof.fold) == {k} and {"prob_0", "prob_1", "prob_2"} <= set(oof.columns)
    assert (patch_run / "results/mlflow/mlflow.db").exists()
