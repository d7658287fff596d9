"""The run's closing lines on the console: what was left out, then the headline scores.

Read from the files the run wrote (nothing is recomputed), so that a finished run and a rerun
that had nothing to do say the same; the workflow prints them when it succeeds or fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def _table(path: Path, **dtype: Any) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=dtype or str, keep_default_na=False)


def run_summary_lines(giou: float, results: Path = Path("results")) -> list[str]:
    """Slides left out of the cohort (with their cause), then the detection scores."""
    lines = []
    tiling = results / "qc" / "tiling_summary.tsv"
    if tiling.exists():
        table = _table(tiling, slide_id=str)
        for row in table[table.status != "ok"].itertuples():
            cause = row.error if row.status == "failed" else "no tissue tiles"
            lines.append(f"histodetect: slide {row.slide_id} left out ({row.path}): {cause}")
    path = results / "metrics" / "detection.json"
    if path.exists():
        m = json.loads(path.read_text())
        oof, auc = m.get("oof_mean_f2"), m.get("slide_auc")
        lines.append(
            f"histodetect: mean F2 at GIoU > {giou} over {m['n_slides']} test slides = "
            f"{m['mean_f2']:.3f}"
            + ("" if oof is None else f" (out of fold on the training slides: {oof:.3f})")
            + f"; AP50 {m['ap50']:.3f}, FROC {m['froc_mean']:.3f}, "
            f"patch AUC {m['patch']['auc']:.3f}" + ("" if auc is None else f", slide AUC {auc:.3f}")
        )
    return lines


def mil_summary_lines(mil_dir: Path = Path("results/mil")) -> list[str]:
    """Bags left out (none of their slides tiled), then the slide-label models' scores."""
    path, folds = mil_dir / "metrics.json", mil_dir / "folds.tsv"
    if not path.exists():
        return []
    table = _table(folds)
    used = table.groupby("bag_id").split.agg(lambda s: (s != "excluded").any())
    lines = [
        f"histodetect: bag {bag} left out: none of its slides tiled" for bag in used.index[~used]
    ]
    m = json.loads(path.read_text())

    def fmt(key: str) -> str:
        value = m.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    if m["task"] == "regression":
        lines.append(
            f"histodetect: {m['model']} over {m['n_test_bags']} test bags: MAE {fmt('mae')}, "
            f"RMSE {fmt('rmse')}, R2 {fmt('r2')}, Pearson {fmt('pearson')}, Spearman "
            f"{fmt('spearman')} (out of fold over {m['n_oof_bags']} training bags: MAE "
            f"{fmt('oof_mae')}, R2 {fmt('oof_r2')}, Pearson {fmt('oof_pearson')})"
        )
        return lines
    if m["task"] == "survival":
        lines.append(
            f"histodetect: {m['model']} over {m['n_test_bags']} test bags: c-index "
            f"{fmt('cindex')}, Uno's {fmt('cindex_uno')}, log-rank p {fmt('logrank_p')}, "
            f"IBS {fmt('ibs')} (out of fold over {m['n_oof_bags']} training bags: c-index "
            f"{fmt('oof_cindex')}, Uno's {fmt('oof_cindex_uno')}, log-rank p "
            f"{fmt('oof_logrank_p')}, IBS {fmt('oof_ibs')})"
        )
        return lines
    qwk = m["task"] == "ordinal"
    lines.append(
        f"histodetect: {m['model']} over {m['n_test_bags']} test bags: AUC {fmt('auc')}, "
        f"balanced accuracy {fmt('balanced_accuracy')}"
        + (f", QWK {fmt('qwk')}" if qwk else "")
        + f" (out of fold over {m['n_oof_bags']} training bags: AUC {fmt('oof_auc')}, "
        f"balanced accuracy {fmt('oof_balanced_accuracy')}"
        + (f", QWK {fmt('oof_qwk')})" if qwk else ")")
    )
    return lines


def mil_predict_summary_lines(mil_dir: Path = Path("results/predict/mil")) -> list[str]:
    """After a predict run with the slide-label models: new slides and bags left out, then
    how many bags were called what (survival: put in which risk group; a numeric label: the
    span of the predictions)."""
    bags_path, out = mil_dir / "bags.tsv", mil_dir / "predictions.tsv"
    if not (bags_path.exists() and out.exists()):
        return []
    bags = _table(bags_path)
    lines = [
        f"histodetect: new slide {row.slide_id} left out: {row.error}"
        for row in bags[bags.split == "excluded"].itertuples()
    ]
    used = bags.groupby("bag_id", sort=False).split.agg(lambda s: (s == "predict").any())
    lines += [
        f"histodetect: new bag {bag} left out: none of its slides tiled and extracted"
        for bag in used.index[~used]
    ]
    table = _table(out)
    left = f"; {int((~used).sum())} left out"
    if "prediction" in table:  # a numeric label: no call
        values = pd.to_numeric(table.prediction)
        span = f"from {values.min():.3g} to {values.max():.3g}" if len(table) else "none"
        lines.append(f"histodetect: {len(table)} new bags predicted in {out} ({span}){left}")
        return lines
    column, verb = (
        ("risk_group", "grouped by risk") if "risk_group" in table else ("call", "called")
    )
    calls = table[column].value_counts().sort_index()
    lines.append(
        f"histodetect: {len(table)} new bags {verb} in {out} ("
        + ", ".join(f"{c}: {n}" for c, n in calls.items())
        + f"){left}"
    )
    return lines
