"""Detection metrics (DigiLut F2, AP, FROC) and tile classification metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from histodetect.annotations.geometry import as_boxes, box_giou, box_iou
from histodetect.columns import BOX_COLUMNS

FROC_FPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FROC_RULES = ("camelyon16", "box_centre")
GROW_UM = 75.0
"""Camelyon16: a lesion's region is its outline grown by this (the size of 5 tumour cells)."""
ITC_UM = 275.0
"""Camelyon16: a grown region whose major axis is shorter holds isolated tumour cells."""


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
    return _fbeta_counts(tp_mask, matched, beta)


def _fbeta_counts(tp_mask: np.ndarray, matched: np.ndarray, beta: float) -> dict[str, float]:
    """Counts, precision, recall and F-beta of one slide's matching (see :func:`slide_fbeta`)."""
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
    """Box-centre hit rule on one slide (``evaluate.froc_rule: box_centre``).

    A prediction hits a lesion when its centre lies inside that ground-truth box (of several,
    the one it overlaps best); boxes are not grown and no lesion is too small to count (see
    :func:`region_hits` for the Camelyon16 rule). A lesion is found at the score of its best hit; further hits on
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


def major_axis_length(geometry: BaseGeometry) -> float:
    """Major axis of the ellipse with the same second moments as the area (as scikit-image's
    ``regionprops`` measures it): ``4 * sqrt(largest eigenvalue of the covariance)``.

    Exact for polygons (Green's theorem over every ring, holes subtracted): a disc gives its
    diameter, a ``w x h`` rectangle with ``w >= h`` gives ``2 w / sqrt(3)``.
    """
    area = m_x = m_y = m_xx = m_yy = m_xy = 0.0
    for poly in shapely.get_parts(geometry):
        poly = orient(poly, sign=1.0)  # exterior counter-clockwise, holes clockwise
        for ring in (poly.exterior, *poly.interiors):
            xy = np.asarray(ring.coords)
            x0, y0, x1, y1 = xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1]
            c = x0 * y1 - x1 * y0
            area += c.sum() / 2
            m_x += ((x0 + x1) * c).sum() / 6
            m_y += ((y0 + y1) * c).sum() / 6
            m_xx += ((x0 * x0 + x0 * x1 + x1 * x1) * c).sum() / 12
            m_yy += ((y0 * y0 + y0 * y1 + y1 * y1) * c).sum() / 12
            m_xy += ((x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0) * c).sum() / 24
    if area <= 0:
        return 0.0
    cx, cy = m_x / area, m_y / area
    cov = np.array(
        [
            [m_xx / area - cx * cx, m_xy / area - cx * cy],
            [m_xy / area - cx * cy, m_yy / area - cy * cy],
        ]
    )
    return float(4 * np.sqrt(max(np.linalg.eigvalsh(cov).max(), 0.0)))


def _filled(geometry: BaseGeometry) -> BaseGeometry:
    """The geometry with its holes filled (each part's exterior)."""
    parts = [Polygon(p.exterior) for p in shapely.get_parts(geometry) if not p.is_empty]
    return shapely.union_all(np.asarray(parts, dtype=object)) if parts else Polygon()


@dataclass(frozen=True)
class LesionRegions:
    """Camelyon16 evaluation regions of one slide.

    ``regions`` are the lesion outlines grown by ``grow_um``, holes filled, with regions that
    touch merged into one (one lesion, as the connected components of the Camelyon16
    evaluation mask); ``itc`` marks the regions of isolated tumour cells (major axis under
    ``itc_um``); ``region_of`` gives the region of each input lesion.
    """

    regions: list[BaseGeometry]
    itc: np.ndarray
    region_of: np.ndarray


def camelyon_regions(
    outlines: Sequence[BaseGeometry],
    mpp: float,
    grow_um: float = GROW_UM,
    itc_um: float = ITC_UM,
) -> LesionRegions:
    """The Camelyon16 evaluation regions of one slide's lesions (level-0 px at ``mpp``)."""
    if not outlines:
        return LesionRegions([], np.zeros(0, bool), np.zeros(0, np.int64))
    grown = [_filled(shapely.buffer(g, grow_um / mpp)) for g in outlines]
    merged = shapely.union_all(np.asarray(grown, dtype=object))
    regions = [_filled(p) for p in shapely.get_parts(merged)]
    region_of = np.array(
        [max(range(len(regions)), key=lambda j: regions[j].intersection(g).area) for g in grown],
        dtype=np.int64,
    )
    itc = np.array([major_axis_length(r) * mpp < itc_um for r in regions], dtype=bool)
    return LesionRegions(regions, itc, region_of)


def region_hits(
    pred: ArrayLike, scores: ArrayLike, lesions: LesionRegions
) -> tuple[np.ndarray, np.ndarray]:
    """Camelyon16 hit rule on one slide, with box centres as the detection points.

    A detection hits a lesion when its point lies inside the lesion's region (see
    :func:`camelyon_regions`; on the edge counts as inside). A lesion is found at the score
    of its best hit; further hits on it are neither true nor false positives, and neither
    are hits on isolated tumour cells; detections that hit no region are false positives.

    Returns:
        ``(region_scores, fp_scores)``: the best hit score of each region (``-inf`` when
        missed), shape ``(len(lesions.regions),)``, and the scores of the false positives.
    """
    p = as_boxes(pred)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{len(p)} boxes but {len(s)} scores")
    best = np.full(len(lesions.regions), -np.inf)
    cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    hit = np.zeros(len(p), dtype=bool)
    for j, region in enumerate(lesions.regions):
        inside = shapely.intersects_xy(region, cx, cy) & ~hit
        if inside.any():
            best[j] = s[inside].max()
        hit |= inside
    return best, s[~hit]


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


def _outlines(gt: pd.DataFrame) -> list[BaseGeometry]:
    """Each lesion's outline: its ``geometry`` where the table has one, else its box."""
    geoms = gt["geometry"].tolist() if "geometry" in gt.columns else [None] * len(gt)
    boxes = gt[BOX_COLUMNS].to_numpy(dtype=np.float64).reshape(-1, 4)
    return [
        g if isinstance(g, BaseGeometry) else shapely.box(*b)
        for g, b in zip(geoms, boxes, strict=True)
    ]


def _froc_hits(
    pb: np.ndarray,
    ps: np.ndarray,
    g: pd.DataFrame,
    rule: str,
    mpp: float | None,
    slide: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One slide under ``rule``: scores of the counted lesions, false positives, whether each
    ground-truth lesion was hit, and the number of isolated-tumour-cell regions left out."""
    gb = g[BOX_COLUMNS].to_numpy(dtype=np.float64)
    if rule == "box_centre":
        hits, fp_scores = lesion_hits(pb, ps, gb)
        return hits, fp_scores, np.isfinite(hits), 0
    if len(g) == 0:
        return np.zeros(0), np.asarray(ps, np.float64).reshape(-1), np.zeros(0, bool), 0
    if mpp is None:
        raise ValueError(f"slide {slide}: the camelyon16 FROC rule needs the slide's mpp")
    regions = camelyon_regions(_outlines(g), mpp)
    best, fp_scores = region_hits(pb, ps, regions)
    return (
        best[~regions.itc],
        fp_scores,
        np.isfinite(best[regions.region_of]),
        int(regions.itc.sum()),
    )


def detection_report(
    pred_df: pd.DataFrame,
    gt_df: pd.DataFrame,
    slides: list[str],
    beta: float = 2.0,
    thr: float = 0.5,
    *,
    froc_rule: str = "camelyon16",
    mpps: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-slide F-beta and pooled detection metrics over ``slides``.

    Args:
        pred_df: Predictions with columns slide_id, x1, y1, x2, y2, score.
        gt_df: Ground truth with columns slide_id, x1, y1, x2, y2, and optionally
            ``geometry`` (the lesion's outline, a shapely polygon, used by the FROC in place
            of the box) and ``class_name`` (adds ``by_class`` to the summary).
        slides: Slides to evaluate (slides absent from ``pred_df`` have no predictions).
        beta: F-beta parameter.
        thr: GIoU threshold of the per-slide F-beta.
        froc_rule: ``camelyon16`` (:func:`region_hits`: box centres inside outlines grown
            by 75 um, isolated tumour cells left out; needs ``mpps``) or ``box_centre``
            (:func:`lesion_hits`: box centres inside the true boxes).
        mpps: Level-0 um/px of each slide with lesions (camelyon16 rule).

    Returns:
        ``(per_slide, summary)``. ``summary`` holds mean_f2, micro precision / recall (NaN
        when undefined), ap50 (VOC all-point AP of the pooled boxes, a true positive at
        IoU > 0.5), froc (lesion sensitivity at 0.25..8 false positives per slide under
        ``froc_rule``), froc_mean, froc_rule, froc_lesions (lesions counted) and froc_itc
        (isolated-tumour-cell regions left out), the curve as ``froc_fps`` / ``froc_sens``,
        and with ``class_name`` in ``gt_df``, ``by_class``: per class its lesion count
        ``n``, ``recall`` (matched at GIoU > ``thr``) and ``froc_hit`` (share hit under the
        FROC rule at any score; isolated tumour cells count as lesions here).
    """
    if froc_rule not in FROC_RULES:
        raise ValueError(f"unknown FROC rule {froc_rule!r}; allowed: {', '.join(FROC_RULES)}")
    rows = []
    all_tp: list[np.ndarray] = []
    all_scores: list[np.ndarray] = []
    lesions: list[np.ndarray] = []
    false_pos: list[np.ndarray] = []
    matched_all: list[np.ndarray] = []
    hit_all: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    n_gt_total = n_itc = 0
    for slide in slides:
        p = _slide_boxes(pred_df, slide)
        g = _slide_boxes(gt_df, slide)
        pb = p[BOX_COLUMNS].to_numpy(dtype=np.float64)
        ps = p["score"].to_numpy(dtype=np.float64)
        gb = g[BOX_COLUMNS].to_numpy(dtype=np.float64)
        tp_mask, matched = match_boxes(pb, ps, gb, thr=thr, by="giou")
        res = _fbeta_counts(tp_mask, matched, beta)
        rows.append({"slide_id": slide, "n_pred": len(pb), "n_gt": len(gb), **res})
        tp50, _ = match_boxes(pb, ps, gb, thr=0.5, by="iou")
        all_tp.append(tp50)
        all_scores.append(ps)
        mpp = None if mpps is None else mpps.get(slide)
        hits, fp_scores, hit, itc = _froc_hits(pb, ps, g, froc_rule, mpp, slide)
        lesions.append(hits)
        false_pos.append(fp_scores)
        matched_all.append(matched)
        hit_all.append(hit)
        if "class_name" in g.columns:
            classes.append(g["class_name"].astype(str).to_numpy())
        n_gt_total += len(gb)
        n_itc += itc
    per_slide = pd.DataFrame(
        rows,
        columns=["slide_id", "n_pred", "n_gt", "tp", "fp", "fn", "precision", "recall", "f2"],
    )
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    lesion_scores = np.concatenate([np.zeros(0), *lesions])
    fps, sens = froc_curve(lesion_scores, np.concatenate([np.zeros(0), *false_pos]), len(slides))
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
        "froc_rule": froc_rule,
        "froc_lesions": len(lesion_scores),
        "froc_itc": n_itc,
        "froc_fps": fps,
        "froc_sens": sens,
    }
    if gt_df is not None and "class_name" in gt_df.columns:
        summary["by_class"] = _by_class(
            np.concatenate([np.zeros(0, str), *classes]),
            np.concatenate([np.zeros(0, bool), *matched_all]),
            np.concatenate([np.zeros(0, bool), *hit_all]),
        )
    return per_slide, summary


def _by_class(names: np.ndarray, matched: np.ndarray, hit: np.ndarray) -> dict[str, Any]:
    """Per class of the true lesions: count, share matched (F-beta rule) and hit (FROC rule)."""
    out = {}
    for name in sorted(set(names.tolist())):
        mine = names == name
        out[name] = {
            "n": int(mine.sum()),
            "recall": float(matched[mine].mean()),
            "froc_hit": float(hit[mine].mean()),
        }
    return out


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
