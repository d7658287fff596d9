"""The point step tuned on out-of-fold heatmaps of the training fields, never on test fields.

Every training field has one out-of-fold heatmap (the fold model blind to its patient). The
search is method x minimum distance x threshold, for the best pooled F1 (the mitosis
contests' greedy match within ``match_um``):

- ``maxima``: one detection pass per minimum distance at the floor (``points.min_score``);
  a maximum is only ever suppressed by a stronger one, so the points above any higher
  threshold are those a pass at that threshold finds, and every threshold is scored at once
  by :func:`~histodetect.points.metrics.best_f1_threshold` (one sort, a cumsum).
- ``components``: regions merge as the threshold falls, so a pass at one threshold does not
  give another's components: each threshold of ``tune_grid.component_threshold`` is its own
  pass (the minimum distance does not apply).

The config's own method and distance are searched first and kept on ties.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.cohort.splits import assert_training_only
from histodetect.detection.heatmap import Heatmap
from histodetect.io import atomic_path
from histodetect.points.detect import points_from_heatmap
from histodetect.points.metrics import best_f1_threshold, prf, scored_matches

SEARCH_COLUMNS = ["method", "min_distance_um", "threshold", "tp", "fp", "fn", "precision",
                  "recall", "f1"]  # fmt: skip


def candidate_passes(
    base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]
) -> list[tuple[str, float | None, float | None]]:
    """The detection passes ``(method, min_distance_um, component_threshold)``, base first.

    ``maxima`` passes have a distance and no fixed threshold; ``components`` passes a fixed
    threshold and no distance.
    """
    passes: list[tuple[str, float | None, float | None]] = []
    methods = list(grid.get("method", [base["method"]]))
    distances = [float(d) for d in grid.get("min_distance_um", [base["min_distance_um"]])]
    thresholds = [float(t) for t in grid.get("component_threshold", [0.5])]
    if base["method"] == "maxima":
        passes.append(("maxima", float(base["min_distance_um"]), None))
    else:
        passes += [("components", None, t) for t in thresholds]
    for method in methods:
        if method == "maxima":
            passes += [("maxima", d, None) for d in distances]
        else:
            passes += [("components", None, t) for t in thresholds]
    return list(dict.fromkeys(passes))


def score_pass(
    heatmaps: Sequence[Heatmap],
    truth: Mapping[str, np.ndarray],
    method: str,
    min_distance_um: float | None,
    component_threshold: float | None,
    *,
    floor: float,
    match_um: float,
) -> dict[str, Any]:
    """One search row: the pass's best threshold (or its fixed one) and pooled counts."""
    fixed = component_threshold is not None
    low = float(component_threshold) if fixed else floor
    detections = {
        h.slide_id: points_from_heatmap(
            h,
            low,
            method=method,
            min_distance_um=1.0 if min_distance_um is None else min_distance_um,
        )
        for h in heatmaps
    }
    matches = scored_matches(detections, truth, {h.slide_id: h.mpp for h in heatmaps}, match_um)
    n_truth = int(sum(len(c) for c in truth.values()))
    threshold = low if fixed else best_f1_threshold(matches, n_truth, floor)[0]
    kept = matches[matches.score >= threshold]
    tp = int(kept.tp.astype(bool).sum())
    fp, fn = len(kept) - tp, n_truth - tp
    return {
        "method": method,
        "min_distance_um": min_distance_um,
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        **prf(tp, fp, fn),
    }


def tune_points(
    heatmaps: Sequence[Heatmap],
    truth: Mapping[str, np.ndarray],
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    *,
    floor: float,
    match_um: float,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The setting (method, min_distance_um, threshold) of best pooled F1, and the search.

    ``truth``: per heatmap's slide the expert centres ``(m, 2)`` in level-0 px.
    """
    if not heatmaps:
        raise ValueError("no out-of-fold heatmaps to tune the points on")
    rows = [
        score_pass(heatmaps, truth, m, d, t, floor=floor, match_um=match_um)
        for m, d, t in candidate_passes(base, grid)
    ]
    best = 0
    for i, row in enumerate(rows):
        if row["f1"] > rows[best]["f1"]:
            best = i
    chosen = {k: rows[best][k] for k in ("method", "min_distance_um", "threshold")}
    return chosen, pd.DataFrame(rows, columns=SEARCH_COLUMNS)


def tune_point_files(
    heatmap_paths: Sequence[str | Path],
    truth: pd.DataFrame,
    split: pd.DataFrame,
    points_cfg: Mapping[str, Any],
    *,
    source: str,
    out_settings: str | Path,
    out_search: str | Path,
) -> dict[str, Any]:
    """Tune on the OOF heatmap files; refuse any field of a test patient; write the results.

    ``truth`` is the table ``image, x, y`` of expert centres (level-0 px); ``split`` the
    table of split_patients (``source`` names it in the refusal).
    """
    heatmaps = [Heatmap.load(p) for p in heatmap_paths]
    ids = [h.slide_id for h in heatmaps]
    assert_training_only(pd.Series(ids, dtype=str), split, source, "point tuning")
    centres = {
        i: truth.loc[truth.image == i, ["x", "y"]].to_numpy(float).reshape(-1, 2) for i in ids
    }
    chosen, search = tune_points(
        heatmaps,
        centres,
        points_cfg,
        points_cfg.get("tune_grid", {}),
        floor=float(points_cfg["min_score"]),
        match_um=float(points_cfg["match_um"]),
    )
    best = search.f1.max()
    record = {
        "settings": chosen,
        "oof_f1": float(best),
        "config_oof_f1": float(search.f1.iloc[0]),
        "match_um": float(points_cfg["match_um"]),
        "n_slides": len(ids),
        "n_truth": int(sum(len(c) for c in centres.values())),
        "slides": ids,
    }
    with atomic_path(out_settings) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    with atomic_path(out_search) as tmp:
        search.sort_values("f1", ascending=False, kind="stable").to_csv(
            tmp, sep="\t", index=False, float_format="%.4f"
        )
    return record
