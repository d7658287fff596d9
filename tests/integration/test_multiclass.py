"""Multi-class slide mode (``labels.classes``): the run evaluates per class and lesion vs rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _workflow import SMALL_CONFIG, snakemake, write_config

from histodetect.slides.synthetic import make_cohort

CLASSES = ["adeno", "squamous"]


def write_outlines(cohort: Path, samples: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """One QuPath GeoJSON per lesion slide: its first lesion adeno, its second squamous."""
    sheet = samples.assign(annotation="")
    for i, row in sheet.iterrows():
        mine = boxes[boxes.filename == Path(row.path).name].reset_index(drop=True)
        if mine.empty:
            continue
        feats = [
            {"type": "Feature",
             "geometry": {"type": "Polygon", "coordinates": [
                 [[b.x1, b.y1], [b.x2, b.y1], [b.x2, b.y2], [b.x1, b.y2], [b.x1, b.y1]]]},
             "properties": {"classification": {"name": CLASSES[k % 2]}}}
            for k, b in enumerate(mine.itertuples())
        ]  # fmt: skip
        path = cohort / f"{row.slide_id}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        sheet.loc[i, "annotation"] = str(path)
    return sheet


@pytest.fixture(scope="module")
def multiclass_run(module_dir: Callable[[str], Path]) -> Path:
    workdir = module_dir("multiclass_run")
    plan = {k: v for k, v in SMALL_CONFIG["demo"].items() if k != "enabled"}
    samples, boxes = make_cohort(workdir / "cohort", **{**plan, "lesions_per_slide": [2, 2]})
    write_outlines(workdir / "cohort", samples, boxes).to_csv(
        workdir / "samples.tsv", sep="\t", index=False
    )
    (workdir / "no_boxes.csv").write_text("filename,x1,x2,y1,y2\n")
    write_config(
        workdir,
        {
            **SMALL_CONFIG,
            "demo": {"enabled": False},
            "samples": str(workdir / "samples.tsv"),
            "annotations": str(workdir / "no_boxes.csv"),
            "labels": {"classes": CLASSES},
            "train": {"epochs": 1, "batch_size": 32},
        },
    )
    snakemake(workdir, "evaluate")
    return workdir


def test_scores_hold_each_class_probability(multiclass_run: Path) -> None:
    res = multiclass_run / "results"
    split = pd.read_csv(res / "splits" / "split.tsv", sep="\t", dtype=str)
    for slide in split.loc[split.split == "test", "slide_id"]:
        scores = pd.read_parquet(res / "scores" / f"{slide}.parquet")
        probs = scores[["prob_background", "prob_adeno", "prob_squamous"]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(scores.prob, 1 - scores.prob_background, atol=1e-5)
        assert set(scores.call_at_oof_priors) <= {"background", "adeno", "squamous"}
        labels = pd.read_parquet(res / "labels" / f"{slide}.parquet")
        assert set(labels.label) <= {-1, 0, 1, 2}


def test_evaluation_per_class_and_lesion_vs_rest(multiclass_run: Path) -> None:
    res = multiclass_run / "results" / "metrics"
    metrics = json.loads((res / "detection.json").read_text())
    patch = metrics["patch"]  # lesion (any class) against background
    assert patch["n_pos"] > 0 and patch["n"] > patch["n_pos"]
    assert patch["auc"] is not None and 0 <= patch["auc"] <= 1
    by_class = metrics["patch_by_class"]
    assert list(by_class) == CLASSES
    assert sum(by_class[c]["n"] for c in CLASSES) == patch["n_pos"]
    for c in CLASSES:
        assert {"n", "lesion_recall", "lesion_auc", "auc", "f1", "precision", "recall"} <= set(
            by_class[c]
        )
    weighted = {
        f"{m}_at_{how}" for m in ("f1", "balanced_accuracy") for how in ("argmax", "oof_priors")
    }
    assert set(metrics["patch_multiclass"]) >= {"auc", "oof_prior_background", *weighted}
    lesions = metrics["by_class"]  # detection recall of each class's true lesions
    assert set(lesions) == set(CLASSES) and all(v["n"] >= 1 for v in lesions.values())
    assert metrics["froc_rule"] == "camelyon16"
    table = pd.read_csv(res / "metrics.tsv", sep="\t")
    assert {"patch_auc", "patch_lesion_auc_adeno", "patch_f1_squamous", "recall_adeno"} <= set(
        table.metric
    )
    assert (res / "roc.png").stat().st_size > 0
