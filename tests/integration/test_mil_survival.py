"""`snakemake mil` with ``mil.task: survival`` on a small graded cohort: each patient's time and
event (drawn from a hazard growing with its hidden lesions, about 40% censored) learnt with the
Cox loss, risks out of fold and on test, the risk groups' Kaplan-Meier curves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from _workflow import snakemake, write_config
from test_mil import CONFIG

pytestmark = pytest.mark.integration

SURVIVAL = {
    **CONFIG,
    "features": {"source": "timm", "context": "none", "model": "resnet18", "batch_size": 256},
    "mil": {"enabled": True, "task": "survival", "bag": "patient", "model": "abmil",
            "epochs": 4, "bootstrap": 50, "batch_bags": 0},
}  # fmt: skip


def test_an_outcome_is_learnt_scored_by_concordance_and_drawn(
    module_dir: Callable[[str], Path],
) -> None:
    workdir = module_dir("mil_survival")
    write_config(workdir, SURVIVAL)
    proc = snakemake(workdir, "mil")
    sheet = pd.read_csv(workdir / "results" / "demo" / "samples.tsv", sep="\t")
    assert {"time", "event"} <= set(sheet.columns) and sheet.event.isin([0, 1]).all()
    res = workdir / "results" / "mil"
    table = pd.read_csv(res / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    assert {"time", "event", "risk", "risk_group"} <= set(table.columns) and "call" not in table
    assert table.risk.notna().all() and (table.split == "test").sum() == 2
    metrics = json.loads((res / "metrics.json").read_text())
    oof = table[table.split == "train"]
    assert ((table.risk > metrics["risk_median"]) == (table.risk_group == "high")).all()
    assert metrics["risk_median"] == pytest.approx(oof.risk.median(), abs=1e-4)
    keys = ("cindex", "cindex_uno", "logrank_p")
    assert all(k in metrics and f"oof_{k}" in metrics for k in keys)
    assert (res / "km.png").exists() and not (res / "roc.png").exists()
    assert (res / "top_tiles.png").exists()
    assert json.loads((res / "decision.json").read_text())["decision"] is None
    page = (workdir / "results" / "report" / "mil.rst").read_text()
    assert "Test c-index" in page and "AUC" not in page
    last = [
        line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "c-index" in line
    ]
    assert last and "Uno's" in last[-1], proc.stderr[-2000:]
    print(last[-1])
    geo = sorted((res / "attention").glob("*.geojson"))[0]  # each tile's part in the risk
    shown = json.loads(geo.read_text())["features"][0]["properties"]["measurements"]
    assert {"tile_risk", "risk_contribution"} <= set(shown)
    assert (res / "attention" / "contribution" / f"{geo.stem}.png").exists()
