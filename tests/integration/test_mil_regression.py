"""`snakemake mil` with ``mil.task: regression`` on a small graded cohort: the number of hidden
lesions as a numeric label, predicted per slide, scored out of fold and on test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from _workflow import snakemake, write_config
from test_mil import CONFIG

pytestmark = pytest.mark.integration

REGRESSION = {
    **CONFIG,
    "features": {"source": "timm", "context": "none", "model": "resnet18", "batch_size": 256},
    "mil": {"enabled": True, "task": "regression", "regression_loss": "huber", "model": "mean",
            "epochs": 4, "bootstrap": 50},
}  # fmt: skip


def test_a_numeric_label_is_predicted_scored_and_drawn(module_dir: Callable[[str], Path]) -> None:
    workdir = module_dir("mil_regression")
    write_config(workdir, REGRESSION)
    proc = snakemake(workdir, "mil")
    res = workdir / "results" / "mil"
    table = pd.read_csv(res / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    assert {"target", "prediction", "fold_sd"} <= set(table.columns) and "call" not in table
    assert table.prediction.notna().all() and (table.split == "test").sum() == 2
    metrics = json.loads((res / "metrics.json").read_text())
    keys = ("mae", "rmse", "r2", "pearson", "spearman")
    assert all(k in metrics and f"oof_{k}" in metrics for k in keys)
    assert metrics["mae"] is not None and metrics["oof_mae"] is not None
    assert (res / "scatter.png").exists() and not (res / "roc.png").exists()
    assert (res / "top_tiles.png").exists()
    assert json.loads((res / "decision.json").read_text())["decision"] is None
    page = (workdir / "results" / "report" / "mil.rst").read_text()
    assert "Test MAE" in page and "AUC" not in page
    last = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "MAE" in line]
    assert last and "Pearson" in last[-1], proc.stderr[-2000:]
    geo = sorted((res / "attention").glob("*.geojson"))[0]  # each tile's part in the value
    shown = json.loads(geo.read_text())["features"][0]["properties"]["measurements"]
    assert {"tile_value", "value_contribution"} <= set(shown)
    assert (res / "attention" / "contribution" / f"{geo.stem}.png").exists()
