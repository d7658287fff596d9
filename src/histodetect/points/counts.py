"""Point counts as pathologists report mitoses: per slide, per mm2 of tissue, in the hotspot.

The hotspot is the window of ``area_mm2`` (WHO grading: 2 mm2, about 10 high-power fields)
holding the most points. The window is an axis-aligned **square**, not a circle: the
densest square has an exact search (its left and top edges can always be slid onto a
point, so only point coordinates are candidates: O(n^2 log n), no grid and no
approximation), it is the rectangle a QuPath user draws and sees, and scanned slides have
no preferred rotation that a circle would be needed to ignore. A square and a circle of
the same area differ little at the cell scale of a mitosis cluster.

A field smaller than the window (the window does not fit inside the image, e.g. a single
high-power field) has no hotspot inside it: its count is the whole field's, over the
field's area (``kind = "field"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Hotspot:
    """The densest window of a slide (level-0 px), or the whole field when it is smaller."""

    count: int
    x1: float
    y1: float
    x2: float
    y2: float
    area_mm2: float
    kind: str
    """``window`` (a square of the hotspot area) or ``field`` (the whole image)."""


def window_side_px(area_mm2: float, mpp: float) -> float:
    """Side in level-0 px of the square of ``area_mm2`` at ``mpp`` microns per pixel."""
    if area_mm2 <= 0 or mpp <= 0:
        raise ValueError(f"area_mm2 and mpp must be > 0, got {area_mm2} and {mpp}")
    return math.sqrt(area_mm2) * 1000.0 / mpp


def densest_square(xy: np.ndarray, side: float) -> tuple[int, np.ndarray]:
    """Most points of ``xy`` (``(n, 2)``) in a closed axis-aligned square of ``side``.

    Returns the count and a boolean mask of the points of one such square (the first by
    left edge, then top edge). Exact: a best square can be slid right and down until its
    left edge meets a point's x and its top edge a point's y, so those are the candidates.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if not len(xy):
        return 0, np.zeros(0, bool)
    order = np.argsort(xy[:, 0], kind="stable")
    xs, ys = xy[order, 0], xy[order, 1]
    best, best_left, best_top = 0, 0.0, 0.0
    for left in np.unique(xs):
        lo = np.searchsorted(xs, left, side="left")
        hi = np.searchsorted(xs, left + side, side="right")
        strip = np.sort(ys[lo:hi])
        inside = np.searchsorted(strip, strip + side, side="right") - np.arange(len(strip))
        k = int(np.argmax(inside))
        if inside[k] > best:
            best, best_left, best_top = int(inside[k]), float(left), float(strip[k])
    mask = (
        (xy[:, 0] >= best_left)
        & (xy[:, 0] <= best_left + side)
        & (xy[:, 1] >= best_top)
        & (xy[:, 1] <= best_top + side)
    )
    return best, mask


def hotspot(xy: np.ndarray, *, mpp: float, area_mm2: float, width: float, height: float) -> Hotspot:
    """The hotspot of points ``xy`` (level-0 px) on an image of ``width`` x ``height`` px.

    The window is centred on the bounding box of its points and kept inside the image (it
    still holds them all); with no point it is centred on the image.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    side = window_side_px(area_mm2, mpp)
    if side > width or side > height:
        field_mm2 = width * height * (mpp / 1000.0) ** 2
        return Hotspot(len(xy), 0.0, 0.0, float(width), float(height), field_mm2, "field")
    count, mask = densest_square(xy, side)
    if count:
        inside = xy[mask]
        cx, cy = (inside.min(0) + inside.max(0)) / 2
    else:
        cx, cy = width / 2, height / 2
    cx = min(max(cx, side / 2), width - side / 2)
    cy = min(max(cy, side / 2), height - side / 2)
    return Hotspot(
        count, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, area_mm2, "window"
    )


COUNT_COLUMNS = [
    "slide_id",
    "n_points",
    "tissue_mm2",
    "points_per_mm2",
    "hotspot_count",
    "hotspot_mm2",
    "hotspot_kind",
    "hotspot_x1",
    "hotspot_y1",
    "hotspot_x2",
    "hotspot_y2",
]


def count_row(
    slide_id: str, xy: np.ndarray, summary: dict[str, Any], area_mm2: float
) -> tuple[dict[str, Any], Hotspot]:
    """One row of the count table (:data:`COUNT_COLUMNS`) and the hotspot of a slide.

    ``summary`` is the slide's tiling record (``results/tiles/{slide}.json``: ``mpp``,
    ``width``, ``height``, ``tissue_mm2``); ``points_per_mm2`` is empty without tissue.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    spot = hotspot(
        xy,
        mpp=float(summary["mpp"]),
        area_mm2=area_mm2,
        width=float(summary["width"]),
        height=float(summary["height"]),
    )
    tissue = float(summary["tissue_mm2"])
    row = {
        "slide_id": slide_id,
        "n_points": len(xy),
        "tissue_mm2": tissue,
        "points_per_mm2": len(xy) / tissue if tissue > 0 else None,
        "hotspot_count": spot.count,
        "hotspot_mm2": spot.area_mm2,
        "hotspot_kind": spot.kind,
        "hotspot_x1": spot.x1,
        "hotspot_y1": spot.y1,
        "hotspot_x2": spot.x2,
        "hotspot_y2": spot.y2,
    }
    return row, spot
