"""QuPath-importable GeoJSON of predicted boxes, ground truth and heatmap contours.

Each feature has a ``name`` (shown in QuPath's annotation list) and its numbers (score,
probabilities, tile count, area) in ``properties.measurements``, a name-to-number object:
that is where QuPath reads a feature's measurements from.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, mapping

from histodetect.detection.heatmap import Heatmap
from histodetect.io import atomic_path

PRED_CLASS = ("Predicted lesion", [220, 20, 20])
GT_CLASS = ("Ground truth", [20, 180, 20])
CONTOUR_CLASS = ("Heatmap contour", [240, 160, 0])
POINT_CLASS = ("Predicted point", [220, 20, 220])
HOTSPOT_CLASS = ("Hotspot", [250, 200, 0])


def _to_lists(obj: Any) -> Any:
    """Tuples (as produced by shapely's ``mapping``) to lists, recursively."""
    if isinstance(obj, tuple | list):
        return [_to_lists(v) for v in obj]
    return obj


def _feature(
    geometry: Polygon | Point,
    cls: tuple[str, list[int]],
    name: str,
    measurements: dict[str, float],
) -> dict[str, Any]:
    """One GeoJSON annotation feature with a QuPath classification, name and measurements."""
    geo = mapping(geometry)
    return {
        "type": "Feature",
        "geometry": {"type": geo["type"], "coordinates": _to_lists(geo["coordinates"])},
        "properties": {
            "objectType": "annotation",
            "name": name,
            "classification": {"name": cls[0], "color": list(cls[1])},
            "measurements": measurements,
        },
    }


MEASURED = ("score", "mean_prob", "max_prob", "n_tiles", "area_um2")
"""Box-table columns written as measurements, when present and finite."""


def _area_um2(geometry: Polygon, mpp: float | None) -> dict[str, float]:
    return {} if mpp is None else {"area_um2": float(geometry.area) * mpp * mpp}


def _box_features(
    df: pd.DataFrame, cls: tuple[str, list[int]], mpp: float | None
) -> list[dict[str, Any]]:
    """Rectangle features for each row of a box table, numbered ``<class> 1, 2, ...``."""
    feats = []
    for i, row in enumerate(df.to_dict("records"), start=1):
        box = shapely.box(*(float(row[c]) for c in ("x1", "y1", "x2", "y2")))
        values = {
            k: float(row[k])
            for k in MEASURED
            if k in row and row[k] is not None and math.isfinite(float(row[k]))
        }
        feats.append(_feature(box, cls, f"{cls[0]} {i}", _area_um2(box, mpp) | values))
    return feats


def boxes_geojson(
    pred_df: pd.DataFrame | None,
    gt_df: pd.DataFrame | None = None,
    contours: list[Polygon] | None = None,
    *,
    mpp: float | None = None,
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of level-0 rectangles and contours for QuPath.

    Args:
        pred_df: Predicted boxes (x1, y1, x2, y2 and the measured columns score, mean_prob,
            max_prob, n_tiles, area_um2 where present), classified "Predicted lesion".
        gt_df: Ground-truth boxes, classified "Ground truth".
        contours: Polygons in level-0 pixels, classified "Heatmap contour".
        mpp: Level-0 microns per pixel; when given, ground-truth boxes and contours get an
            ``area_um2`` measurement too (predicted boxes carry their own).
    """
    feats: list[dict[str, Any]] = []
    if gt_df is not None:
        feats += _box_features(gt_df, GT_CLASS, mpp)
    if pred_df is not None:
        feats += _box_features(pred_df, PRED_CLASS, mpp)
    for i, poly in enumerate(contours or [], start=1):
        name = f"{CONTOUR_CLASS[0]} {i}"
        feats.append(_feature(poly, CONTOUR_CLASS, name, _area_um2(poly, mpp)))
    return {"type": "FeatureCollection", "features": feats}


def points_geojson(
    points: pd.DataFrame, cls: tuple[str, list[int]] = POINT_CLASS
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of level-0 point detections ``x, y, score`` for QuPath.

    Each point is a ``Point`` annotation named ``<class> 1, 2, ...`` (best score first, as
    given) with its ``score`` in ``measurements``.
    """
    feats = [
        _feature(Point(float(r.x), float(r.y)), cls, f"{cls[0]} {i}", {"score": float(r.score)})
        for i, r in enumerate(points.itertuples(), start=1)
    ]
    return {"type": "FeatureCollection", "features": feats}


def region_feature(
    box: tuple[float, float, float, float],
    measurements: dict[str, float],
    cls: tuple[str, list[int]] = HOTSPOT_CLASS,
) -> dict[str, Any]:
    """A level-0 rectangle ``(x1, y1, x2, y2)`` as one annotation named after its class."""
    return _feature(shapely.box(*box), cls, cls[0], measurements)


def heatmap_contours(heatmap: Heatmap, level: float = 0.5) -> list[Polygon]:
    """Outlines of the union of tiles with ``prob >= level``, in level-0 pixels.

    Collinear vertices are removed; each connected region is one polygon (with holes).
    """
    prob = np.nan_to_num(np.asarray(heatmap.prob, dtype=np.float64), nan=-np.inf)
    rows, cols = np.nonzero(prob >= level)
    if rows.size == 0:
        return []
    x1 = heatmap.origin_x + cols * heatmap.stride
    y1 = heatmap.origin_y + rows * heatmap.stride
    squares = shapely.box(x1, y1, x1 + heatmap.tile_size, y1 + heatmap.tile_size)
    union = shapely.union_all(squares).simplify(0)
    if isinstance(union, Polygon):
        return [union]
    if isinstance(union, MultiPolygon):
        return list(union.geoms)
    return [g for g in getattr(union, "geoms", []) if isinstance(g, Polygon)]


def write_geojson(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a GeoJSON object atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))
