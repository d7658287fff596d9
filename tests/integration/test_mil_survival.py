"""`snakemake mil` with ``mil.task: survival`` on a small graded cohort: each patient's time and
event (drawn from a hazard growing with its hidden lesions, about 40% censored) learnt with the
Cox loss (Efron's ties), risks out of fold and on test, three risk groups cut at out-of-fold
tertiles, time-dependent AUC and integrated Brier score, the groups' Kaplan-Meier curves; then
`snakemake predict` gives the test patients' slides, under new ids, the same risks and groups."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _workflow import snakemake, write_config
from test_mil import CONFIG

pytestmark = pytest.mark.integration

SURVIVAL = {
    **CONFIG,
    "features": {"source": "timm", "context": "none", "model": "resnet18", "batch_size": 256},
    "mil": {"enabled": True, "task": "survival", "bag": "patient", "model": "abmil",
            "epochs": 4, "bootstrap": 50, "batch_bags": 0, "time_unit": "months",
            "risk_groups": [0.33, 0.67]},
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
    assert metrics["risk_median"] == pytest.approx(oof.risk.median(), abs=1e-4)
    groups = metrics["risk_groups"]
    assert groups["names"] == ["low", "mid", "high"] and groups["quantiles"] == [0.33, 0.67]
    assert groups["cuts"] == pytest.approx(oof.risk.quantile([0.33, 0.67]).to_list(), abs=1e-4)
    low, high = table.risk <= groups["cuts"][0], table.risk > groups["cuts"][1]
    assert (table.risk_group == np.select([low, high], ["low", "high"], "mid")).all()
    keys = ("cindex", "cindex_uno", "logrank_p", "ibs", "auc_t", "cindex_ci95")
    assert all(k in metrics and f"oof_{k}" in metrics for k in keys)
    assert metrics["ties"] == "efron" and metrics["time_unit"] == "months"
    seen = oof.time[oof.event == 1]
    assert metrics["horizons"] == pytest.approx(seen.quantile([0.25, 0.5, 0.75]).to_list())
    assert list(metrics["oof_auc_t"]) == [f"{h:g}" for h in metrics["horizons"]]
    assert metrics["oof_ibs"] is None or 0 <= metrics["oof_ibs"] <= 1
    print({k: metrics[k] for k in ("cindex", "oof_cindex", "oof_cindex_uno", "oof_auc_t",
                                   "oof_ibs", "ibs", "oof_logrank_p", "group_sizes")})  # fmt: skip
    assert (res / "km.png").stat().st_size > 0 and not (res / "roc.png").exists()
    assert (res / "top_tiles.png").exists()
    decision = json.loads((res / "decision.json").read_text())
    assert decision["decision"] is None and decision["risk_groups"] == groups
    page = (workdir / "results" / "report" / "mil.rst").read_text()
    assert "Test c-index" in page and "AUC" not in page
    last = [
        line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "c-index" in line
    ]
    assert last and "Uno's" in last[-1] and "IBS" in last[-1], proc.stderr[-2000:]
    print(last[-1])
    # predict: the test patients' slides under new ids give the same risks and groups
    folds = pd.read_csv(res / "folds.tsv", sep="\t", dtype=str)
    test = folds[folds.split == "test"]
    paths = sheet.assign(slide_id=sheet.slide_id.astype(str)).set_index("slide_id").path
    new = pd.DataFrame({"slide_id": "N" + test.slide_id, "patient_id": "N" + test.patient_id,
                        "path": test.slide_id.map(paths)})  # fmt: skip
    new.to_csv(workdir / "new.tsv", sep="\t", index=False)
    proc = snakemake(workdir, "predict", "--config", "predict={samples: new.tsv}")
    out = workdir / "results" / "predict" / "mil" / "predictions.tsv"
    scored = pd.read_csv(out, sep="\t", dtype={"bag_id": str}).set_index("bag_id")
    run = table[table.split == "test"].set_index("N" + table.bag_id[table.split == "test"])
    assert sorted(scored.index) == sorted(run.index)
    np.testing.assert_allclose(scored.risk, run.risk.loc[scored.index], atol=1e-4)
    assert (scored.risk_group == run.risk_group.loc[scored.index]).all()
    said = [line for line in proc.stdout.splitlines() if line.startswith("histodetect:")]
    assert "new bags grouped by risk" in said[-1], said
    geo = sorted((res / "attention").glob("*.geojson"))[0]  # each tile's part in the risk
    shown = json.loads(geo.read_text())["features"][0]["properties"]["measurements"]
    assert {"tile_risk", "risk_contribution"} <= set(shown)
    assert (res / "attention" / "contribution" / f"{geo.stem}.png").exists()
    drawn = workdir / "results" / "predict" / "mil" / "attention" / "contribution"
    assert sorted(p.stem for p in drawn.glob("*.png")) == sorted(new.slide_id)
