"""The mitosis contests' point metric, its threshold chosen out of fold, and intervals.

A detection is a true positive when it lies within ``radius`` (8 um in MITOS 2012, AMIDA13,
TUPAC16, MIDOG) of an expert centre not matched yet; detections are taken by score, best
first, each matching the nearest free centre (one match per centre). Precision, recall and
F1 are given per image and pooled (counts summed over images before the ratios).

Because the matching goes by score, a detection's outcome depends only on the detections
that outscore it: the true-positive flags found once at the lowest threshold hold for every
higher one, so a threshold sweep is one sort and a cumulative sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from histodetect.annotations.formats import EXCLUDE, ImportSettings
from histodetect.annotations.lesions import read_cohort_annotations, slide_mpps
from histodetect.io import atomic_path
from histodetect.points.counts import hotspot


def match_points(
    detections: np.ndarray, scores: np.ndarray, truth: np.ndarray, radius: float
) -> np.ndarray:
    """True-positive flag of each detection (``(n, 2)`` xy) against centres ``(m, 2)``.

    Greedy by score (ties: the order given); each detection takes the nearest unmatched
    centre within ``radius`` (same units as the coordinates).
    """
    detections = np.asarray(detections, float).reshape(-1, 2)
    truth = np.asarray(truth, float).reshape(-1, 2)
    tp = np.zeros(len(detections), bool)
    if not len(detections) or not len(truth):
        return tp
    free = np.ones(len(truth), bool)
    dist = np.hypot(*(detections[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    for i in np.argsort(-np.asarray(scores, float), kind="stable"):
        d = np.where(free, dist[i], np.inf)
        j = int(np.argmin(d))
        if d[j] <= radius:
            tp[i], free[j] = True, False
    return tp


def prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Precision, recall and F1 of counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def scored_matches(
    detections: Mapping[str, pd.DataFrame],
    truth: Mapping[str, np.ndarray],
    mpp: Mapping[str, float],
    radius_um: float = 8.0,
) -> pd.DataFrame:
    """Every detection ``image, score, tp`` matched within ``radius_um`` of its image's centres.

    ``detections``: per image ``x, y, score`` (level-0 px); ``truth``: per image the centres
    ``(m, 2)``; ``mpp``: per image level-0 um/px. Images without detections are kept (no row).
    """
    rows = []
    for image, centres in truth.items():
        det = detections.get(image, pd.DataFrame(columns=["x", "y", "score"]))
        xy, score = det[["x", "y"]].to_numpy(float), det.score.to_numpy(float)
        tp = match_points(xy, score, centres, radius_um / mpp[image])
        rows.append(pd.DataFrame({"image": image, "score": score, "tp": tp}))
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["image", "score", "tp"])
    )


def image_counts(
    matches: pd.DataFrame, n_truth: Mapping[str, int], threshold: float
) -> pd.DataFrame:
    """Per image ``tp, fp, fn`` and precision, recall, F1 of the detections scoring >= threshold."""
    kept = matches[matches.score >= threshold]
    out = []
    for image, n in n_truth.items():
        flags = kept.tp[kept.image == image].to_numpy(bool)
        tp, fp = int(flags.sum()), int((~flags).sum())
        out.append(
            {"image": image, "tp": tp, "fp": fp, "fn": int(n) - tp, **prf(tp, fp, int(n) - tp)}
        )
    return pd.DataFrame(out, columns=["image", "tp", "fp", "fn", "precision", "recall", "f1"])


def pooled(counts: pd.DataFrame) -> dict[str, float]:
    """Pooled precision, recall, F1 (and counts) of an :func:`image_counts` table."""
    tp, fp, fn = (int(counts[c].sum()) for c in ("tp", "fp", "fn"))
    return {"tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}


def best_f1_threshold(
    matches: pd.DataFrame, n_truth: int, floor: float = 0.0
) -> tuple[float, float]:
    """The score threshold with the best pooled F1 over ``matches``, and that F1.

    Candidates are the detections' own scores (at least ``floor``); ties go to the higher
    threshold. With no detection the threshold is ``1.0`` and F1 0.
    """
    m = matches[matches.score >= floor].sort_values("score", ascending=False, kind="stable")
    if m.empty or n_truth == 0:
        return 1.0, 0.0
    score = m.score.to_numpy(float)
    tp = np.cumsum(m.tp.to_numpy(bool))
    k = np.arange(1, len(m) + 1)
    last = np.r_[score[1:] != score[:-1], True]  # a threshold keeps all equal scores
    f1 = np.where(last, 2 * tp / (k + n_truth), -1.0)
    i = int(np.argmax(f1))
    return float(score[i]), float(f1[i])


def out_of_fold_thresholds(
    matches: pd.DataFrame, n_truth: Mapping[str, int], folds: Mapping[str, int], floor: float = 0.0
) -> dict[int, float]:
    """For each fold, the threshold best on the images of the *other* folds (pooled F1).

    ``matches`` must come from out-of-fold scores (each image scored by a model that did
    not train on its patient); ``folds`` maps image to fold.
    """
    out = {}
    for k in sorted(set(folds.values())):
        others = [i for i, f in folds.items() if f != k]
        rest = matches[matches.image.isin(others)]
        out[k] = best_f1_threshold(rest, sum(n_truth[i] for i in others), floor)[0]
    return out


def bootstrap_f1(
    counts: pd.DataFrame, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the pooled F1, resampling images with replacement."""
    rng = np.random.default_rng(seed)
    c = counts[["tp", "fp", "fn"]].to_numpy(float)
    picks = rng.integers(0, len(c), size=(n, len(c)))
    tp, fp, fn = (c[picks, j].sum(1) for j in range(3))
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    lo, hi = np.quantile(f1, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def truth_by_image(
    points: pd.DataFrame, images: Iterable[str], classes: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Centres ``(m, 2)`` per image from a table ``image, x, y[, class]`` (only ``classes``)."""
    if classes is not None and "class" in points.columns:
        points = points[points["class"].isin(list(classes))]
    return {i: points.loc[points.image == i, ["x", "y"]].to_numpy(float) for i in images}


def point_truth(annotations: pd.DataFrame, negative_classes: Iterable[str] = ()) -> pd.DataFrame:
    """Expert centres ``image, x, y`` of point annotations (the discs' centres), look-alike
    classes and excluded regions left out."""
    keep = ~annotations.class_name.isin([*negative_classes, EXCLUDE])
    ann = annotations[keep]
    b = np.asarray([g.bounds for g in ann.geometry], float).reshape(-1, 4)
    return pd.DataFrame(
        {
            "image": ann.slide_id.to_numpy(),
            "x": (b[:, 0] + b[:, 2]) / 2,
            "y": (b[:, 1] + b[:, 3]) / 2,
        }
    )


def evaluate_out_of_fold(
    detections: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    folds: Mapping[str, int],
    mpp: Mapping[str, float],
    *,
    match_um: float = 8.0,
    floor: float = 0.0,
    bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """The point metric of out-of-fold detections, each fold at the threshold of the others.

    Returns a record (pooled P/R/F1 with a bootstrap interval over images, per fold the
    threshold and its P/R/F1) and the per-image table (``fold``, ``threshold``, counts).
    """
    images = sorted(folds)
    centres = truth_by_image(truth, images)
    n_truth = {i: len(centres[i]) for i in images}
    matches = scored_matches(detections, centres, mpp, match_um)
    thresholds = out_of_fold_thresholds(matches, n_truth, folds, floor)
    per_image = []
    for k, t in thresholds.items():
        mine = [i for i in images if folds[i] == k]
        counts = image_counts(matches[matches.image.isin(mine)], {i: n_truth[i] for i in mine}, t)
        per_image.append(counts.assign(fold=k, threshold=t))
    table = pd.concat(per_image, ignore_index=True)
    lo, hi = bootstrap_f1(table, n=bootstrap, seed=seed)
    by_fold = {
        str(k): {"threshold": t, **pooled(table[table.fold == k])} for k, t in thresholds.items()
    }
    record = {
        "n_images": len(images),
        "n_truth": int(sum(n_truth.values())),
        "match_um": match_um,
        **pooled(table),
        "f1_interval": [lo, hi],
        "folds": by_fold,
    }
    return record, table


def read_point_truth(
    sheet: pd.DataFrame,
    summaries: Sequence[str | Path],
    slides: Sequence[str],
    annotation_import: Mapping[str, Any],
    negative_classes: Iterable[str],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Expert centres ``image, x, y`` of ``slides`` from the sheet's point files, and each
    slide's level-0 mpp (from its tiling record ``results/tiles/{slide}.json``)."""
    mpps = slide_mpps(summaries)
    annotations = read_cohort_annotations(
        sheet, None, ImportSettings(**annotation_import), slides=list(slides), mpps=mpps
    )
    return point_truth(annotations, negative_classes), mpps


def count_errors(predicted: Sequence[float], truth: Sequence[float]) -> dict[str, float | None]:
    """Mean absolute error and Spearman correlation of per-image counts (None where undefined:
    no image, or a constant side)."""
    pred, true = np.asarray(predicted, float), np.asarray(truth, float)
    if not len(pred):
        return {"count_mae": None, "count_spearman": None}
    rho = None
    if len(pred) > 1 and np.ptp(pred) > 0 and np.ptp(true) > 0:
        rho = float(spearmanr(pred, true).statistic)
    return {"count_mae": float(np.abs(pred - true).mean()), "count_spearman": rho}


def hotspot_counts(
    detections: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    summaries: Sequence[str | Path],
    area_mm2: float,
) -> pd.DataFrame:
    """Per image ``image, hotspot_pred, hotspot_truth``: the hotspot counts (see
    :mod:`histodetect.points.counts`) of the detections and of the expert centres, each
    in its own densest window (as a pathologist's count and the model's are compared)."""
    info = {}
    for path in summaries:
        record = json.loads(Path(path).read_text())
        info[str(record["slide_id"])] = record
    rows = []
    for image, det in detections.items():
        geometry = {k: float(info[image][k]) for k in ("mpp", "width", "height")}
        found = det[["x", "y"]].to_numpy(float)
        true = truth.loc[truth.image == image, ["x", "y"]].to_numpy(float)
        rows.append(
            {
                "image": image,
                "hotspot_pred": hotspot(found, area_mm2=area_mm2, **geometry).count,
                "hotspot_truth": hotspot(true, area_mm2=area_mm2, **geometry).count,
            }
        )
    return pd.DataFrame(rows, columns=["image", "hotspot_pred", "hotspot_truth"])


def evaluate_test_points(
    detections: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    mpp: Mapping[str, float],
    threshold: float,
    *,
    match_um: float = 8.0,
    bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """The point metric and the count errors of test images' detections at ``threshold``.

    Returns a record (pooled P/R/F1 with a bootstrap interval, count MAE and Spearman over
    images) and the per-image table (counts, ``n_pred`` and ``n_truth``).
    """
    images = sorted(detections)
    centres = truth_by_image(truth, images)
    n_truth = {i: len(centres[i]) for i in images}
    matches = scored_matches(detections, centres, mpp, match_um)
    table = image_counts(matches, n_truth, threshold)
    table["n_pred"] = table.tp + table.fp
    table["n_truth"] = table.tp + table.fn
    lo, hi = bootstrap_f1(table, n=bootstrap, seed=seed)
    record = {
        "n_images": len(images),
        "n_truth": int(sum(n_truth.values())),
        "threshold": threshold,
        **pooled(table),
        "f1_interval": [lo, hi],
        **count_errors(table.n_pred, table.n_truth),
    }
    return record, table


def evaluate_point_files(
    point_paths: Sequence[str | Path],
    folds_path: str | Path,
    sheet_path: str | Path,
    summaries: Sequence[str | Path],
    *,
    points_cfg: Mapping[str, Any],
    annotation_import: Mapping[str, Any],
    negative_classes: Iterable[str],
    seed: int,
    out_metrics: str | Path,
    out_per_image: str | Path,
    test_paths: Sequence[str | Path] = (),
    tuned_path: str | Path | None = None,
) -> dict:
    """:func:`evaluate_out_of_fold` on the files of rule evaluate_points, written out.

    Truth comes from the sheet's per-slide point files; every slide's fold from
    ``folds.tsv`` (its points are out of fold: scored by the model blind to its patient).
    The record also holds the count errors out of fold and, under ``test``, the test
    slides' points (``test_paths``, made at the tuning of ``tuned_path``) scored at the
    tuned threshold with their count errors (None without test slides). ``summaries``
    are the tiling records of every slide scored.
    """
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    folds_table = pd.read_csv(folds_path, sep="\t", dtype={"slide_id": str})

    def read(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
        return {Path(p).stem: pd.read_csv(p, dtype={"slide_id": str}) for p in paths}

    detections, test_detections = read(point_paths), read(test_paths)
    folds = {
        s: int(f)
        for s, f in zip(folds_table.slide_id, folds_table.fold, strict=True)
        if s in detections
    }
    truth, mpps = read_point_truth(
        sheet, summaries, [*folds, *test_detections], annotation_import, negative_classes
    )
    record, per_image = evaluate_out_of_fold(
        detections,
        truth,
        folds,
        mpps,
        match_um=points_cfg["match_um"],
        floor=points_cfg["min_score"],
        bootstrap=points_cfg["bootstrap"],
        seed=seed,
    )
    record.update(count_errors(per_image.tp + per_image.fp, per_image.tp + per_image.fn))
    record["test"] = None
    if test_detections:
        if tuned_path is None:
            raise ValueError("test points need the tuning record they were made with")
        tuned = json.loads(Path(tuned_path).read_text())
        test, test_table = evaluate_test_points(
            test_detections,
            truth,
            mpps,
            float(tuned["settings"]["threshold"]),
            match_um=points_cfg["match_um"],
            bootstrap=points_cfg["bootstrap"],
            seed=seed,
        )
        spots = hotspot_counts(
            test_detections, truth, summaries, float(points_cfg.get("hotspot_mm2", 2.0))
        )
        test_table = test_table.merge(spots, on="image", how="left")
        hot = count_errors(test_table.hotspot_pred, test_table.hotspot_truth)
        test["hotspot_count_mae"], test["hotspot_count_spearman"] = hot.values()
        record["test"] = {"settings": tuned["settings"], **test}
        per_image = pd.concat(
            [per_image.assign(split="train"), test_table.assign(split="test")], ignore_index=True
        )
    with atomic_path(out_metrics) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    with atomic_path(out_per_image) as tmp:
        per_image.to_csv(tmp, sep="\t", index=False)
    return record
