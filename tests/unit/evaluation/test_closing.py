"""The run's closing lines, read from the files the run wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from histodetect.evaluation.closing import (
    mil_predict_summary_lines,
    mil_summary_lines,
    run_summary_lines,
)


def test_left_out_slides_then_the_scores(tmp_path: Path) -> None:
    assert run_summary_lines(0.5, tmp_path) == []
    (tmp_path / "qc").mkdir()
    pd.DataFrame(
        {"slide_id": ["007", "b", "c"], "path": ["a.svs", "b.svs", "c.svs"],
         "status": ["ok", "failed", "empty"], "error": ["", "truncated file", ""]}
    ).to_csv(tmp_path / "qc" / "tiling_summary.tsv", sep="\t", index=False)  # fmt: skip
    (tmp_path / "metrics").mkdir()
    metrics = {"n_slides": 4, "mean_f2": 0.5, "oof_mean_f2": None, "ap50": 0.25}
    metrics |= {"froc_mean": 0.125, "patch": {"auc": 0.9}, "slide_auc": 0.75}
    (tmp_path / "metrics" / "detection.json").write_text(json.dumps(metrics))
    assert run_summary_lines(0.5, tmp_path) == [
        "histodetect: slide b left out (b.svs): truncated file",
        "histodetect: slide c left out (c.svs): no tissue tiles",
        "histodetect: mean F2 at GIoU > 0.5 over 4 test slides = 0.500; AP50 0.250, "
        "FROC 0.125, patch AUC 0.900, slide AUC 0.750",
    ]


def test_bags_left_out_and_the_slide_label_scores(tmp_path: Path) -> None:
    assert mil_summary_lines(tmp_path) == []
    pd.DataFrame({"bag_id": ["p1", "p1", "p2"], "split": ["train", "excluded", "excluded"]}).to_csv(
        tmp_path / "folds.tsv", sep="\t", index=False
    )
    m = {"task": "ordinal", "model": "abmil", "n_test_bags": 3, "n_oof_bags": 9, "auc": 0.8}
    m |= {"balanced_accuracy": None, "qwk": 0.5, "oof_auc": 0.7}
    m |= {"oof_balanced_accuracy": 0.6, "oof_qwk": 0.4}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert mil_summary_lines(tmp_path) == [
        "histodetect: bag p2 left out: none of its slides tiled",
        "histodetect: abmil over 3 test bags: AUC 0.800, balanced accuracy n/a, QWK 0.500 "
        "(out of fold over 9 training bags: AUC 0.700, balanced accuracy 0.600, QWK 0.400)",
    ]


def test_new_bags_called(tmp_path: Path) -> None:
    assert mil_predict_summary_lines(tmp_path) == []
    pd.DataFrame(
        {"bag_id": ["a", "b", "c"], "slide_id": ["1", "2", "3"],
         "split": ["predict", "predict", "excluded"], "error": ["", "", "unreadable"]}
    ).to_csv(tmp_path / "bags.tsv", sep="\t", index=False)  # fmt: skip
    pd.DataFrame({"bag_id": ["a", "b"], "call": ["1", "0"]}).to_csv(
        tmp_path / "predictions.tsv", sep="\t", index=False
    )
    assert mil_predict_summary_lines(tmp_path) == [
        "histodetect: new slide 3 left out: unreadable",
        "histodetect: new bag c left out: none of its slides tiled and extracted",
        f"histodetect: 2 new bags called in {tmp_path / 'predictions.tsv'} (0: 1, 1: 1); 1 left out",
    ]


def test_the_regression_scores_close_the_run(tmp_path: Path) -> None:
    pd.DataFrame({"bag_id": ["p1"], "split": ["train"]}).to_csv(
        tmp_path / "folds.tsv", sep="\t", index=False
    )
    m = {"task": "regression", "model": "mean", "n_test_bags": 3, "n_oof_bags": 9, "mae": 1.5}
    m |= {"rmse": 2.0, "r2": 0.5, "pearson": 0.8, "spearman": None}
    m |= {"oof_mae": 1.25, "oof_r2": 0.6, "oof_pearson": 0.75}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert mil_summary_lines(tmp_path) == [
        "histodetect: mean over 3 test bags: MAE 1.500, RMSE 2.000, R2 0.500, Pearson 0.800, "
        "Spearman n/a (out of fold over 9 training bags: MAE 1.250, R2 0.600, Pearson 0.750)"
    ]


def test_the_survival_concordance_closes_the_run(tmp_path: Path) -> None:
    pd.DataFrame({"bag_id": ["p1"], "split": ["train"]}).to_csv(
        tmp_path / "folds.tsv", sep="\t", index=False
    )
    m = {"task": "survival", "model": "abmil", "n_test_bags": 4, "n_oof_bags": 12}
    m |= {"cindex": 0.75, "cindex_uno": 0.7, "logrank_p": 0.04, "oof_cindex": 0.68}
    m |= {"oof_cindex_uno": None, "oof_logrank_p": 0.2, "ibs": 0.18, "oof_ibs": 0.2}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert mil_summary_lines(tmp_path) == [
        "histodetect: abmil over 4 test bags: c-index 0.750, Uno's 0.700, log-rank p 0.040, "
        "IBS 0.180 (out of fold over 12 training bags: c-index 0.680, Uno's n/a, log-rank p "
        "0.200, IBS 0.200)"
    ]


@pytest.mark.parametrize(
    ("column", "values", "said"),
    [("risk_group", ["high", "low"], "grouped by risk in {} (high: 1, low: 1)"),
     ("prediction", [1.5, 3.25], "predicted in {} (from 1.5 to 3.25)")],
)  # fmt: skip
def test_new_bags_of_an_outcome_are_counted_by_group_or_spanned(
    tmp_path: Path, column: str, values: list, said: str
) -> None:
    pd.DataFrame({"bag_id": ["a", "b"], "slide_id": ["1", "2"], "split": "predict",
                  "error": ""}).to_csv(tmp_path / "bags.tsv", sep="\t", index=False)  # fmt: skip
    pd.DataFrame({"bag_id": ["a", "b"], column: values}).to_csv(
        tmp_path / "predictions.tsv", sep="\t", index=False
    )
    out = tmp_path / "predictions.tsv"
    assert mil_predict_summary_lines(tmp_path) == [
        f"histodetect: 2 new bags {said.format(out)}; 0 left out"
    ]
