"""Detection metrics (DigiLut F2, AP, FROC) and tile classification metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from histodetect.annotations.geometry import as_boxes, box_giou, box_iou
from histodetect.columns import BOX_COLUMNS

FROC_FPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def match_boxes(
    pred: ArrayLike, scores: ArrayLike, gt: ArrayLike, thr: float = 0.5, by: str = "giou"
) -> tuple[np.ndarray, np.ndarray]:
    """Greedily match predictions to ground truth in descending score order.

    Each prediction takes the unmatched ground-truth box it overlaps best; it is a true
    positive when that overlap is strictly greater than ``thr``.

    Args:
        pred: Predicted boxes, shape ``(n, 4)``.
        scores: Prediction scores, shape ``(n,)``.
        gt: Ground-truth boxes, shape ``(m, 4)``.
        thr: Overlap threshold (strict).
        by: ``"giou"`` or ``"iou"``.

    Returns:
        ``(tp, matched)``: boolean masks over predictions ``(n,)`` and ground truth ``(m,)``.
    """
    if by not in ("giou", "iou"):
        raise ValueError(f"unknown overlap {by!r}; allowed: giou, iou")
    p, g = as_boxes(pred), as_boxes(gt)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{len(p)} boxes but {len(s)} scores")
    tp = np.zeros(len(p), dtype=bool)
    matched = np.zeros(len(g), dtype=bool)
    if len(p) == 0 or len(g) == 0:
        return tp, matched
    sim = box_giou(p, g) if by == "giou" else box_iou(p, g)
    for i in np.argsort(-s, kind="stable"):
        cand = np.where(matched, -np.inf, sim[i])
        j = int(np.argmax(cand))
        if cand[j] > thr:
            tp[i] = True
            matched[j] = True
    return tp, matched


def _fbeta(precision: float, recall: float, beta: float) -> float:
    """F-beta from precision and recall (0 when both are 0)."""
    b2 = beta * beta
    denom = b2 * precision + recall
    return float((1 + b2) * precision * recall / denom) if denom > 0 else 0.0


def slide_fbeta(
    pred: ArrayLike, scores: ArrayLike, gt: ArrayLike, beta: float = 2.0, thr: float = 0.5
) -> dict[str, float]:
    """DigiLut per-slide F-beta after GIoU > ``thr`` matching.

    Precision is 1 when there are no predictions and recall is 1 when there is no ground
    truth, so: no GT and no prediction scores 1; no GT with predictions, or GT without
    predictions, scores 0.

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f2"}`` (``f2`` holds the F-beta).
    """
    tp_mask, matched = match_boxes(pred, scores, gt, thr=thr, by="giou")
    tp = int(tp_mask.sum())
    fp = len(tp_mask) - tp
    fn = len(matched) - int(matched.sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f2": _fbeta(precision, recall, beta),
    }


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """VOC all-point interpolated AP of pooled detections (NaN without ground truth)."""
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    ctp = np.cumsum(hits)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(hits) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def lesion_hits(pred: ArrayLike, scores: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Camelyon16 hit rule on one slide, with box centres as the detection points.

    A prediction hits a lesion when its centre lies inside that ground-truth box (of several,
    the one it overlaps best). A lesion is found at the score of its best hit; further hits on
    an already hit lesion are neither true nor false positives; predictions that hit nothing
    are false positives.

    Returns:
        ``(lesion_scores, fp_scores)``: the best hit score of each ground-truth box (``-inf``
        when missed), shape ``(m,)``, and the scores of the false positives.
    """
    p, g = as_boxes(pred), as_boxes(gt)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{len(p)} boxes but {len(s)} scores")
    lesion = np.full(len(g), -np.inf)
    if len(p) == 0:
        return lesion, np.zeros(0)
    cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    inside = (
        (g[None, :, 0] <= cx[:, None]) & (cx[:, None] <= g[None, :, 2])
        & (g[None, :, 1] <= cy[:, None]) & (cy[:, None] <= g[None, :, 3])
    )  # fmt: skip
    hit = inside.any(axis=1)
    best = np.argmax(np.where(inside, box_iou(p, g) + 1.0, 0.0), axis=1) if len(g) else hit
    for i in np.flatnonzero(hit):
        lesion[best[i]] = max(lesion[best[i]], s[i])
    return lesion, s[~hit]


def froc_curve(
    lesion_scores: np.ndarray, fp_scores: np.ndarray, n_slides: int
) -> tuple[np.ndarray, np.ndarray]:
    """FROC curve: average false positives per slide and lesion sensitivity.

    One point per distinct score threshold ``t`` (detections with ``score >= t`` kept), plus
    the origin; both arrays are non-decreasing. ``lesion_scores`` holds every lesion of the
    cohort (``-inf`` when never hit), ``fp_scores`` every false positive.
    """
    les = np.asarray(lesion_scores, dtype=np.float64)
    fp = np.asarray(fp_scores, dtype=np.float64)
    found = les[np.isfinite(les)]
    thresholds = np.unique(np.r_[found, fp])[::-1]
    if n_slides <= 0 or thresholds.size == 0:
        return np.zeros(1), np.zeros(1)
    n_fp = len(fp) - np.searchsorted(np.sort(fp), thresholds, side="left")
    n_tp = len(found) - np.searchsorted(np.sort(found), thresholds, side="left")
    sens = n_tp / len(les) if len(les) else np.zeros(len(thresholds))
    return np.r_[0.0, n_fp / n_slides], np.r_[0.0, sens]


def froc_at(
    fps: np.ndarray, sens: np.ndarray, targets: tuple[float, ...] = FROC_FPS
) -> dict[float, float]:
    """Sensitivity at given average FP per slide, linearly interpolated as in Camelyon16.

    Where several points share an FP rate the highest sensitivity is used; beyond the
    last point the final sensitivity holds.
    """
    ux = np.unique(fps)
    uy = np.array([sens[fps == x].max() for x in ux])
    return {t: float(np.interp(t, ux, uy)) for t in targets}


def _slide_boxes(df: pd.DataFrame | None, slide: str) -> pd.DataFrame:
    """Rows of one slide (empty when ``df`` is None)."""
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=["slide_id", *BOX_COLUMNS, "score"])
    return df[df["slide_id"].astype(str) == slide]


def detection_report(
    pred_df: pd.DataFrame,
    gt_df: pd.DataFrame,
    slides: list[str],
    beta: float = 2.0,
    thr: float = 0.5,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-slide F-beta and pooled detection metrics over ``slides``.

    Args:
        pred_df: Predictions with columns slide_id, x1, y1, x2, y2, score.
        gt_df: Ground truth with columns slide_id, x1, y1, x2, y2.
        slides: Slides to evaluate (slides absent from ``pred_df`` have no predictions).
        beta: F-beta parameter.
        thr: GIoU threshold of the per-slide F-beta.

    Returns:
        ``(per_slide, summary)``. ``summary`` holds mean_f2, micro precision / recall (NaN
        when undefined), ap50 (VOC all-point AP of the pooled boxes, a true positive at
        IoU > 0.5), froc (lesion sensitivity at 0.25..8 false positives per slide, Camelyon16
        rule of :func:`lesion_hits`), froc_mean, and the curve as ``froc_fps`` / ``froc_sens``.
    """
    rows = []
    all_tp: list[np.ndarray] = []
    all_scores: list[np.ndarray] = []
    lesions: list[np.ndarray] = []
    false_pos: list[np.ndarray] = []
    n_gt_total = 0
    for slide in slides:
        p = _slide_boxes(pred_df, slide)
        g = _slide_boxes(gt_df, slide)
        pb = p[BOX_COLUMNS].to_numpy(dtype=np.float64)
        ps = p["score"].to_numpy(dtype=np.float64)
        gb = g[BOX_COLUMNS].to_numpy(dtype=np.float64)
        res = slide_fbeta(pb, ps, gb, beta=beta, thr=thr)
        rows.append({"slide_id": slide, "n_pred": len(pb), "n_gt": len(gb), **res})
        tp50, _ = match_boxes(pb, ps, gb, thr=0.5, by="iou")
        all_tp.append(tp50)
        all_scores.append(ps)
        hits, fp_scores = lesion_hits(pb, ps, gb)
        lesions.append(hits)
        false_pos.append(fp_scores)
        n_gt_total += len(gb)
    per_slide = pd.DataFrame(
        rows,
        columns=["slide_id", "n_pred", "n_gt", "tp", "fp", "fn", "precision", "recall", "f2"],
    )
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    fps, sens = froc_curve(
        np.concatenate([np.zeros(0), *lesions]),
        np.concatenate([np.zeros(0), *false_pos]),
        len(slides),
    )
    froc = froc_at(fps, sens)
    n_tp, n_pred = int(per_slide.tp.sum()), int(per_slide.n_pred.sum())
    summary: dict[str, Any] = {
        "n_slides": len(slides),
        "mean_f2": float(per_slide.f2.mean()) if len(per_slide) else float("nan"),
        "precision": n_tp / n_pred if n_pred else float("nan"),
        "recall": n_tp / n_gt_total if n_gt_total else float("nan"),
        "ap50": average_precision(tp, scores, n_gt_total),
        "froc": froc,
        "froc_mean": float(np.mean(list(froc.values()))),
        "froc_fps": fps,
        "froc_sens": sens,
    }
    return per_slide, summary


def patch_metrics(y_true: ArrayLike, y_score: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """Tile classification metrics at ``threshold`` (auc NaN with a single class)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    t = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    pred = (s >= threshold).astype(np.int64)
    single = len(np.unique(t)) < 2
    nan = float("nan")
    return {
        "auc": nan if single else float(roc_auc_score(t, s)),
        "f1": float(f1_score(t, pred, zero_division=0)) if len(t) else nan,
        "precision": float(precision_score(t, pred, zero_division=0)) if len(t) else nan,
        "recall": float(recall_score(t, pred, zero_division=0)) if len(t) else nan,
        "accuracy": float(accuracy_score(t, pred)) if len(t) else nan,
        "balanced_accuracy": nan if single else float(balanced_accuracy_score(t, pred)),
        "n": len(t),
        "n_pos": int(t.sum()),
    }
