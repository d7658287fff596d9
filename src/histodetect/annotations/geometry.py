"""Vectorised geometry of axis-aligned boxes ``(x1, y1, x2, y2)`` in level-0 pixels,
and the exact overlap of tiles with lesion outlines (shapely polygons).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import ArrayLike
from shapely.geometry.base import BaseGeometry


def as_boxes(boxes: ArrayLike) -> np.ndarray:
    """Return ``boxes`` as a float64 array of shape ``(n, 4)`` (an empty input gives ``(0, 4)``)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {arr.shape}")
    return arr


def box_area(boxes: ArrayLike) -> np.ndarray:
    """Area of each box, shape ``(n,)``; inverted boxes count as zero."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas, shape ``(n, m)``."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _iou_parts(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes as arrays with their pairwise intersection and union areas."""
    a_, b_ = as_boxes(a), as_boxes(b)
    inter = _intersection(a_, b_)
    union = box_area(a_)[:, None] + box_area(b_)[None, :] - inter
    return a_, b_, inter, union


def box_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise intersection over union, shape ``(n, m)``; 0 where the union is empty."""
    _, _, inter, union = _iou_parts(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_giou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise generalized IoU (Rezatofighi et al. 2019), shape ``(n, m)``, in ``[-1, 1]``.

    ``GIoU = IoU - (C - U) / C`` with ``C`` the area of the smallest enclosing box and
    ``U`` the union area.
    """
    a_, b_, inter, union = _iou_parts(a, b)
    cw = np.maximum(a_[:, None, 2], b_[None, :, 2]) - np.minimum(a_[:, None, 0], b_[None, :, 0])
    ch = np.maximum(a_[:, None, 3], b_[None, :, 3]) - np.minimum(a_[:, None, 1], b_[None, :, 1])
    hull = np.clip(cw, 0, None) * np.clip(ch, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        return np.where(hull > 0, iou - (hull - union) / hull, iou)


def _union_coverage(tiles: np.ndarray, boxes: np.ndarray, chunk: int) -> np.ndarray:
    """Exact area of each tile inside the union of ``boxes``, by coordinate compression.

    The box edges cut the plane into a grid of cells, each either inside the union or
    not; a tile's covered area is the sum over covered cells of the cell-tile overlap,
    which factorises into x and y overlaps: ``sum_ij ox[t, i] * cov[j, i] * oy[t, j]``.
    """
    xs = np.unique(boxes[:, [0, 2]])
    ys = np.unique(boxes[:, [1, 3]])
    cx = (xs[:-1] + xs[1:]) / 2
    cy = (ys[:-1] + ys[1:]) / 2
    inside_x = (boxes[:, None, 0] <= cx[None, :]) & (cx[None, :] < boxes[:, None, 2])
    inside_y = (boxes[:, None, 1] <= cy[None, :]) & (cy[None, :] < boxes[:, None, 3])
    covered = (inside_y.T.astype(np.float64) @ inside_x.astype(np.float64)) > 0  # (ny, nx)
    cov = covered.astype(np.float64)
    out = np.empty(len(tiles), dtype=np.float64)
    for s in range(0, len(tiles), chunk):
        t = tiles[s : s + chunk]
        ox = np.minimum(t[:, None, 2], xs[None, 1:]) - np.maximum(t[:, None, 0], xs[None, :-1])
        oy = np.minimum(t[:, None, 3], ys[None, 1:]) - np.maximum(t[:, None, 1], ys[None, :-1])
        ox = np.clip(ox, 0, None)
        oy = np.clip(oy, 0, None)
        out[s : s + chunk] = np.einsum("tj,tj->t", ox @ cov.T, oy)
    return out


def tile_box_overlap(
    tiles: ArrayLike, boxes: ArrayLike, *, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Overlap of each tile with a set of (possibly overlapping) boxes.

    Args:
        tiles: Tile boxes, shape ``(n, 4)``.
        boxes: Boxes, shape ``(m, 4)``; ``m`` may be 0.
        chunk: Tiles processed per vectorised block (bounds memory).

    Returns:
        ``(iou_max, coverage)``, each shape ``(n,)``: the largest IoU of the tile with any
        box, and the exact fraction of the tile area inside the union of the boxes.
    """
    t = as_boxes(tiles)
    b = as_boxes(boxes)
    b = b[box_area(b) > 0]
    n = len(t)
    iou_max = np.zeros(n, dtype=np.float64)
    coverage = np.zeros(n, dtype=np.float64)
    if n == 0 or len(b) == 0:
        return iou_max, coverage
    hit = np.zeros(n, dtype=bool)
    for s in range(0, n, chunk):
        inter = _intersection(t[s : s + chunk], b)
        union = box_area(t[s : s + chunk])[:, None] + box_area(b)[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        iou_max[s : s + chunk] = iou.max(axis=1)
        hit[s : s + chunk] = (inter > 0).any(axis=1)
    idx = np.flatnonzero(hit)
    if idx.size:
        area = box_area(t[idx])
        covered = _union_coverage(t[idx], b, max(1, chunk // 8))
        coverage[idx] = np.clip(np.where(area > 0, covered / np.where(area > 0, area, 1), 0), 0, 1)
    return iou_max, coverage


def tile_geometry_overlap(
    tiles: ArrayLike, geometries: Sequence[BaseGeometry]
) -> tuple[np.ndarray, np.ndarray]:
    """Overlap of each tile with a set of (possibly overlapping) polygons, exactly.

    Candidates come from an STRtree over the tiles; tiles wholly inside the union cost
    no overlay, only tiles on an outline are intersected.

    Args:
        tiles: Tile boxes, shape ``(n, 4)``.
        geometries: Polygons or multipolygons in the tiles' coordinates; may be empty.

    Returns:
        ``(iou_max, coverage)``, each shape ``(n,)``: the largest IoU of the tile with any
        one geometry, and the fraction of the tile area inside the union of all of them.
    """
    t = as_boxes(tiles)
    n = len(t)
    iou_max = np.zeros(n, dtype=np.float64)
    coverage = np.zeros(n, dtype=np.float64)
    geoms = np.asarray([g for g in geometries if not g.is_empty and g.area > 0], dtype=object)
    if n == 0 or len(geoms) == 0:
        return iou_max, coverage
    polys = shapely.box(t[:, 0], t[:, 1], t[:, 2], t[:, 3])
    area = box_area(t)
    tree = shapely.STRtree(polys)
    union = shapely.union_all(geoms)
    shapely.prepare(union)
    cand = tree.query(union, predicate="intersects")
    inside = shapely.contains(union, polys[cand])
    coverage[cand[inside]] = 1.0
    edge = cand[~inside]
    if edge.size:
        inter = shapely.area(shapely.intersection(polys[edge], union))
        coverage[edge] = np.clip(inter / np.where(area[edge] > 0, area[edge], 1), 0, 1)
    shapely.prepare(geoms)
    gi, ti = tree.query(geoms, predicate="intersects")
    if gi.size:
        whole = shapely.contains(geoms[gi], polys[ti])
        inter = np.where(whole, area[ti], 0.0)
        part = ~whole
        inter[part] = shapely.area(shapely.intersection(polys[ti[part]], geoms[gi[part]]))
        union_area = area[ti] + shapely.area(geoms[gi]) - inter
        iou = np.where(union_area > 0, inter / np.where(union_area > 0, union_area, 1), 0.0)
        np.maximum.at(iou_max, ti, iou)
    return iou_max, coverage
