"""Point detections (object centres, e.g. mitoses) from a tile-grid heatmap.

Two ways, both scored by heatmap probability and returned as ``x, y, score`` in level-0 px
of the slide, highest score first:

- ``maxima``: cells that are the largest of their 3 x 3 neighbourhood and reach the
  threshold, taken by score, each one dropping the weaker ones within ``min_distance_um``
  (greedy non-maximum suppression). Because a point is only ever suppressed by a stronger
  one, raising the threshold afterwards keeps exactly the points a higher threshold would
  have found: one low-threshold pass serves every threshold.
- ``components``: the centres of the connected regions (8-connected) of cells at or above
  the threshold, scored by their maximum.

A point's position is the probability-weighted mean of the centres of the cells around it
(its 3 x 3 neighbourhood, or its component), finer than the grid step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from histodetect.detection.geojson import points_geojson, region_feature, write_geojson
from histodetect.detection.heatmap import Heatmap
from histodetect.errors import InputError
from histodetect.io import atomic_path
from histodetect.points.counts import COUNT_COLUMNS, count_row

POINT_METHODS = ("maxima", "components")
POINT_COLUMNS = ["x", "y", "score"]


def _cell_centres(heatmap: Heatmap, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    half = heatmap.tile_size / 2
    return np.stack(
        [
            heatmap.origin_x + cols * heatmap.stride + half,
            heatmap.origin_y + rows * heatmap.stride + half,
        ],
        axis=1,
    )


def _weighted_centres(
    heatmap: Heatmap, prob: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Probability-weighted centre of each cell's 3 x 3 neighbourhood."""
    h, w = prob.shape
    out = np.empty((len(rows), 2))
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, h), max(c - 1, 0), min(c + 2, w)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        weight = prob[r0:r1, c0:c1].ravel()
        xy = _cell_centres(heatmap, rr.ravel(), cc.ravel())
        out[i] = (weight[:, None] * xy).sum(0) / weight.sum()
    return out


def suppress(xy: np.ndarray, scores: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices of points kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(np.hypot(*(xy[i] - xy[j])) >= min_distance for j in kept):
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def points_from_heatmap(
    heatmap: Heatmap,
    threshold: float = 0.5,
    *,
    method: str = "maxima",
    min_distance_um: float = 8.0,
) -> pd.DataFrame:
    """Scored centres ``x, y, score`` (level-0 px, best first) of a heatmap (see module doc).

    Args:
        heatmap: the slide's heatmap (NaN cells: no tile).
        threshold: least probability of a detection.
        method: ``maxima`` or ``components``.
        min_distance_um: ``maxima``: least distance between two detections, microns.
    """
    if method not in POINT_METHODS:
        raise ValueError(f"point method must be one of {POINT_METHODS}, not {method!r}")
    prob = np.nan_to_num(np.asarray(heatmap.prob, np.float64), nan=0.0)
    if method == "components":
        labels, n = ndimage.label(prob >= threshold, structure=np.ones((3, 3)))
        if n == 0:
            return pd.DataFrame(columns=POINT_COLUMNS, dtype=float)
        index = np.arange(1, n + 1)
        score = ndimage.maximum(prob, labels, index)
        rr, cc = np.nonzero(labels)
        xy = _cell_centres(heatmap, rr, cc)
        w = prob[rr, cc]
        total = np.bincount(labels[rr, cc], w, n + 1)[1:]
        x = np.bincount(labels[rr, cc], w * xy[:, 0], n + 1)[1:] / total
        y = np.bincount(labels[rr, cc], w * xy[:, 1], n + 1)[1:] / total
        table = pd.DataFrame({"x": x, "y": y, "score": np.asarray(score, float)})
        return table.sort_values("score", ascending=False, kind="stable", ignore_index=True)
    peak = (prob >= threshold) & (prob == ndimage.maximum_filter(prob, size=3, mode="constant"))
    rows, cols = np.nonzero(peak)
    xy = _weighted_centres(heatmap, prob, rows, cols)
    scores = prob[rows, cols]
    keep = suppress(xy, scores, min_distance_um / heatmap.mpp)
    return pd.DataFrame(
        {"x": xy[keep, 0] if len(keep) else [], "y": xy[keep, 1] if len(keep) else [],
         "score": scores[keep] if len(keep) else []},
        columns=POINT_COLUMNS,
    )  # fmt: skip


def write_points(
    heatmap_path: str | Path,
    cfg: Mapping[str, Any],
    *,
    out_csv: str | Path,
    out_geojson: str | Path,
) -> pd.DataFrame:
    """Detect a heatmap's points (the ``points`` config) and write them as CSV and GeoJSON.

    The CSV has ``slide_id, x, y, score`` (level-0 px), every point scoring at least
    ``cfg["min_score"]``, best first.
    """
    heatmap = Heatmap.load(heatmap_path)
    points = points_from_heatmap(
        heatmap, cfg["min_score"], method=cfg["method"], min_distance_um=cfg["min_distance_um"]
    )
    with atomic_path(out_csv) as tmp:
        points.assign(slide_id=heatmap.slide_id)[["slide_id", *POINT_COLUMNS]].to_csv(
            tmp, index=False
        )
    write_geojson(points_geojson(points), out_geojson)
    return points


def tuned_point_settings(points_cfg: Mapping[str, Any], tuned_path: str | Path) -> dict[str, Any]:
    """The ``points`` config with the method, distance and threshold of a tuning record.

    ``tuned_path`` is ``results/tuning/points.json`` (rule tune_points); its threshold becomes
    ``min_score``: only detections at or above it are written.
    """
    try:
        chosen = json.loads(Path(tuned_path).read_text())["settings"]
        method, threshold = str(chosen["method"]), float(chosen["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(
            tuned_path, f"not a point tuning record of rule tune_points ({err})"
        ) from None
    distance = chosen.get("min_distance_um")
    return {
        **points_cfg,
        "method": method,
        "min_distance_um": points_cfg["min_distance_um"] if distance is None else float(distance),
        "min_score": threshold,
    }


def write_slide_points(
    heatmap_path: str | Path,
    summary_path: str | Path,
    settings: Mapping[str, Any],
    *,
    out_csv: str | Path,
    out_geojson: str | Path,
    out_counts: str | Path,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A slide's points at ``settings`` (see :func:`tuned_point_settings`) and their counts.

    Writes the points CSV (``slide_id, x, y, score``), a GeoJSON of the points and the
    hotspot (``settings["hotspot_mm2"]``, see :mod:`histodetect.points.counts`) and the
    slide's one-row count table (TSV, :data:`COUNT_COLUMNS`).
    """
    heatmap = Heatmap.load(heatmap_path)
    points = points_from_heatmap(
        heatmap,
        settings["min_score"],
        method=settings["method"],
        min_distance_um=settings["min_distance_um"],
    )
    summary = json.loads(Path(summary_path).read_text())
    row, spot = count_row(
        heatmap.slide_id, points[["x", "y"]].to_numpy(float), summary, settings["hotspot_mm2"]
    )
    with atomic_path(out_csv) as tmp:
        points.assign(slide_id=heatmap.slide_id)[["slide_id", *POINT_COLUMNS]].to_csv(
            tmp, index=False
        )
    collection = points_geojson(points)
    collection["features"].append(
        region_feature(
            (spot.x1, spot.y1, spot.x2, spot.y2),
            {"count": float(spot.count), "area_mm2": float(spot.area_mm2)},
        )
    )
    write_geojson(collection, out_geojson)
    with atomic_path(out_counts) as tmp:
        pd.DataFrame([row], columns=COUNT_COLUMNS).to_csv(tmp, sep="\t", index=False)
    return points, row


def write_count_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """The slides' one-row count tables (:func:`write_slide_points`) as one TSV."""
    tables = [pd.read_csv(p, sep="\t", dtype={"slide_id": str}) for p in paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COUNT_COLUMNS)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
