"""The box step and the slide score tuned on out-of-fold heatmaps, never on test slides.

Every training slide has one out-of-fold (OOF) heatmap, made by the fold model that did not
train on its patient. The settings of :func:`~histodetect.detection.boxes.boxes_from_heatmap`
that give the best mean DigiLut F2 on those slides, and the slide score with the best OOF AUC
(its threshold at the best balanced accuracy), are what test slides and new slides then use.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.detection.boxes import boxes_from_heatmap
from histodetect.detection.heatmap import Heatmap
from histodetect.detection.slide_outputs import CONFIG_ONLY, expected_count
from histodetect.detection.slide_score import METHODS, SlideScore
from histodetect.errors import InputError, name_some
from histodetect.evaluation.detection_metrics import slide_fbeta
from histodetect.fit.metrics import best_threshold, binary_auc
from histodetect.io import atomic_path

TUNED_KEYS = ("method", "threshold", "min_neighbours", "score", "min_size_um", "top_n", "nms_iou")


@dataclass(frozen=True)
class OofSlide:
    """One training slide's out-of-fold heatmap, its true boxes and its expected count."""

    slide_id: str
    heatmap: Heatmap
    truth: np.ndarray
    expected: int | None = None


def check_not_test(slide_ids: Iterable[str], split: pd.DataFrame, source: str) -> None:
    """Refuse tuning on any slide the patient split holds out for testing."""
    test = set(split.loc[split["split"] == "test", "slide_id"].astype(str))
    leaked = sorted(set(map(str, slide_ids)) & test)
    if leaked:
        raise InputError(source, f"test slide(s) {name_some(leaked)} may not be used for tuning")


def settings_grid(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[dict]:
    """``base`` first, then every combination of ``grid`` values over it (duplicates dropped).

    Only :data:`TUNED_KEYS` of ``grid`` are searched; other keys of ``base`` stay as they are.
    """
    keys = [k for k in grid if k in TUNED_KEYS]
    out, seen = [], set()
    first = dict(base)
    for values in itertools.chain([None], itertools.product(*(grid[k] for k in keys))):
        setting = (
            dict(first) if values is None else {**first, **dict(zip(keys, values, strict=True))}
        )
        key = tuple(sorted((k, repr(v)) for k, v in setting.items()))
        if key not in seen:
            seen.add(key)
            out.append(setting)
    return out


def quantile_thresholds(slides: Sequence[OofSlide], quantiles: Sequence[float]) -> list[float]:
    """Thresholds at ``quantiles`` of the OOF tissue-tile probabilities, pooled over ``slides``.

    They follow the model's calibration: a network whose probabilities sit in a narrow band
    (few epochs, strong undersampling) still gets thresholds inside that band.
    """
    probs = np.concatenate([s.heatmap.prob[np.isfinite(s.heatmap.prob)] for s in slides])
    if probs.size == 0 or not quantiles:
        return []
    return sorted({round(float(q), 4) for q in np.quantile(probs, list(quantiles))})


def mean_f2(
    slides: Sequence[OofSlide], setting: Mapping[str, Any], giou: float, beta: float
) -> float:
    """Mean per-slide F-beta of ``setting`` over ``slides`` (a slide's count sets its top_n)."""
    scores = []
    for s in slides:
        cfg = dict(setting)
        if s.expected is not None:
            cfg["top_n"] = s.expected
        boxes = boxes_from_heatmap(s.heatmap, **cfg)
        pred = boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
        scores.append(slide_fbeta(pred, boxes["score"].to_numpy(), s.truth, beta, giou)["f2"])
    return float(np.mean(scores)) if scores else float("nan")


def tune_boxes(
    slides: Sequence[OofSlide],
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    *,
    giou: float = 0.5,
    beta: float = 2.0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The setting with the best mean OOF F2, and the whole search (one row per setting).

    The config's own setting (``base``) is searched first and kept on ties, so tuning only
    moves when it finds something better. ``grid["threshold_quantiles"]`` adds the thresholds
    at those quantiles of the OOF probabilities (:func:`quantile_thresholds`) to
    ``grid["threshold"]``.
    """
    if not slides:
        raise ValueError("no out-of-fold slides to tune on")
    grid = dict(grid)
    extra = quantile_thresholds(slides, grid.pop("threshold_quantiles", []))
    if extra:
        fixed = list(grid.get("threshold", [base.get("threshold", 0.5)]))
        grid["threshold"] = fixed + [t for t in extra if t not in fixed]
    rows = []
    for setting in settings_grid(base, grid):
        rows.append({**setting, "oof_mean_f2": mean_f2(slides, setting, giou, beta)})
    table = pd.DataFrame(rows)
    best = int(np.argmax(table["oof_mean_f2"].to_numpy()))
    chosen = {k: _plain(v) for k, v in rows[best].items() if k != "oof_mean_f2"}
    return chosen, table


def _plain(value: Any) -> Any:
    """A NumPy scalar as a Python one (JSON-ready); None stays None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def tune_slide_score(
    probs: Mapping[str, np.ndarray],
    positive: Mapping[str, bool],
    base: SlideScore,
    *,
    top_ks: Sequence[int] = (3, 10, 30),
    tile_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> tuple[SlideScore, float, pd.DataFrame]:
    """The slide score with the best OOF AUC and its threshold; with the search table.

    Without both lesion and lesion-free slides among ``probs`` nothing can be tuned: ``base``
    comes back with NaN AUC.
    """
    ids = sorted(probs)
    y = np.array([bool(positive[s]) for s in ids])
    candidates = [base] + [
        SlideScore(m, k, t, base.threshold)
        for m in METHODS
        for k in (top_ks if m == "top_k_mean" else [base.top_k])
        for t in (tile_thresholds if m == "fraction" else [base.tile_threshold])
    ]
    if len(np.unique(y)) < 2:
        return base, float("nan"), pd.DataFrame([{**base.to_dict(), "oof_auc": np.nan}])
    rows, best, best_auc = [], base, -1.0
    for cand in candidates:
        scores = np.array([cand.score(probs[s]) for s in ids])
        auc = binary_auc(y, scores)
        rows.append({**cand.to_dict(), "oof_auc": auc})
        if auc > best_auc:
            best, best_auc = cand, auc
    scores = np.array([best.score(probs[s]) for s in ids])
    best = SlideScore(best.method, best.top_k, best.tile_threshold, best_threshold(y, scores))
    return best, best_auc, pd.DataFrame(rows)


def tune_cohort(
    *,
    heatmap_paths: Sequence[str | Path],
    score_paths: Sequence[str | Path],
    truth: pd.DataFrame,
    sheet: pd.DataFrame,
    split: pd.DataFrame,
    boxes_cfg: Mapping[str, Any],
    slide_cfg: Mapping[str, Any],
    giou: float,
    beta: float,
    outputs: Any,
    source: str = "split",
) -> dict[str, Any]:
    """Tune the box step and the slide score on OOF heatmaps; write the record and searches.

    ``outputs`` has ``settings`` (JSON: chosen settings, OOF mean F2 with them and with the
    config's, the slide score), ``search`` and ``slide_search`` (TSV tables).
    """
    heatmaps = [Heatmap.load(p) for p in heatmap_paths]
    check_not_test([h.slide_id for h in heatmaps], split, source)
    base = {k: v for k, v in boxes_cfg.items() if k not in (*CONFIG_ONLY, "overlay_px")}
    slides = [
        OofSlide(
            h.slide_id,
            h,
            truth.loc[truth.slide_id == h.slide_id, ["x1", "y1", "x2", "y2"]].to_numpy(np.float64),
            expected_count(sheet, h.slide_id),
        )
        for h in heatmaps
    ]
    chosen, search = tune_boxes(slides, base, boxes_cfg.get("tune_grid", {}), giou=giou, beta=beta)
    probs = {Path(p).stem: pd.read_parquet(p)["prob"].to_numpy() for p in score_paths}
    positive = {s.slide_id: len(s.truth) > 0 for s in slides}
    slide_score, auc, slide_search = tune_slide_score(
        probs, positive, SlideScore.from_dict(slide_cfg)
    )
    record = {
        "settings": chosen,
        "oof_mean_f2": float(search["oof_mean_f2"].max()),
        "config_oof_mean_f2": float(search["oof_mean_f2"].iloc[0]),
        "n_slides": len(slides),
        "slides": [s.slide_id for s in slides],
        "slide_score": {**slide_score.to_dict(), "oof_auc": None if np.isnan(auc) else auc},
    }
    with atomic_path(outputs.settings) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    with atomic_path(outputs.search) as tmp:
        search.sort_values("oof_mean_f2", ascending=False, kind="stable").to_csv(
            tmp, sep="\t", index=False, float_format="%.4f"
        )
    with atomic_path(outputs.slide_search) as tmp:
        slide_search.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return record
