"""Turn a tile-grid heatmap into scored lesion boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from histodetect.annotations.geometry import box_iou
from histodetect.detection.heatmap import Heatmap

METHODS = ("components", "dbscan", "merge")
SCORES = ("max", "mean", "area_weighted")
OUTPUT_COLUMNS = ["x1", "y1", "x2", "y2", "score", "mean_prob", "max_prob", "n_tiles", "area_um2"]
DIGILUT_COLUMNS = ["filename", "x1", "x2", "y1", "y2"]


def _empty() -> pd.DataFrame:
    """An empty box table with the output columns and dtypes."""
    df = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in OUTPUT_COLUMNS})
    return df.astype({"n_tiles": np.int64})


def positive_mask(prob: np.ndarray, threshold: float, min_neighbours: int = 0) -> np.ndarray:
    """Cells with ``prob >= threshold`` (NaN counts as below) and enough positive neighbours.

    Args:
        prob: Probability grid, shape ``(rows, cols)``.
        threshold: Positive threshold.
        min_neighbours: Minimum number of positive 8-neighbours a positive cell must have
            (one pass, on the thresholded grid).
    """
    pos = np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=-np.inf) >= threshold
    if min_neighbours > 0:
        kernel = np.ones((3, 3), dtype=np.int64)
        kernel[1, 1] = 0
        counts = ndimage.convolve(pos.astype(np.int64), kernel, mode="constant", cval=0)
        pos &= counts >= min_neighbours
    return pos


def _labels(pos: np.ndarray, method: str, eps_tiles: float, min_samples: int) -> np.ndarray:
    """Cluster label per cell (0 = none), by connected components or DBSCAN."""
    if method == "components":
        labels, _ = ndimage.label(pos, structure=np.ones((3, 3), dtype=bool))
        return labels
    from sklearn.cluster import DBSCAN

    labels = np.zeros(pos.shape, dtype=np.int64)
    rc = np.argwhere(pos)
    if len(rc):
        found = DBSCAN(eps=eps_tiles, min_samples=min_samples).fit_predict(rc.astype(np.float64))
        labels[rc[:, 0], rc[:, 1]] = np.where(found >= 0, found + 1, 0)
    return labels


def merge_to_n(labels: np.ndarray, n: int) -> np.ndarray:
    """Merge labelled regions, nearest first (single linkage on box gaps), until <= ``n`` remain.

    The gap of two regions is the distance in grid cells between their bounding boxes (0 when
    they touch or overlap), so neighbouring fragments of one lesion join before distant ones.
    """
    k = int(labels.max()) if labels.size else 0
    if n < 1 or k <= n:
        return labels
    from scipy.cluster.hierarchy import fcluster, linkage

    slices = ndimage.find_objects(labels)
    box = np.array([[s[0].start, s[0].stop - 1, s[1].start, s[1].stop - 1] for s in slices])
    dr = np.maximum(
        0, np.maximum(box[:, None, 0] - box[None, :, 1], box[None, :, 0] - box[:, None, 1])
    )
    dc = np.maximum(
        0, np.maximum(box[:, None, 2] - box[None, :, 3], box[None, :, 2] - box[:, None, 3])
    )
    gap = np.hypot(dr, dc)[np.triu_indices(k, 1)]
    group = fcluster(linkage(gap, method="single"), t=n, criterion="maxclust")
    return np.r_[0, group][labels]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, by descending score.

    A box is dropped when its IoU with an already kept box is greater than ``iou``.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlap = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if not keep or overlap[i, keep].max() <= iou:
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def boxes_from_heatmap(
    heatmap: Heatmap,
    *,
    method: str = "components",
    threshold: float = 0.5,
    min_neighbours: int = 0,
    eps_tiles: float = 1.5,
    min_samples: int = 1,
    score: str = "max",
    min_size_um: float = 0.0,
    nms_iou: float | None = None,
    top_n: int | None = None,
) -> pd.DataFrame:
    """Group positive tiles into clusters and return the enclosing box of each.

    Args:
        heatmap: Tile-grid probabilities and their level-0 geometry.
        method: ``"components"`` (8-connected components), ``"dbscan"`` (DBSCAN on tile
            grid indices, noise dropped) or ``"merge"`` (components merged nearest first
            until at most ``top_n`` remain, as the DigiLut winners did; without ``top_n``
            it is ``"components"``).
        threshold: A tile is positive when ``prob >= threshold``; NaN is negative.
        min_neighbours: Drop positive tiles with fewer positive 8-neighbours.
        eps_tiles: DBSCAN radius in tiles (grid steps).
        min_samples: DBSCAN core-point size.
        score: Box score: ``"max"``, ``"mean"`` or ``"area_weighted"`` (mean * sqrt(n_tiles)).
        min_size_um: Drop boxes whose width or height is below this, in microns.
        nms_iou: If set, greedy non-maximum suppression at this IoU.
        top_n: If set, keep only the best ``top_n`` boxes.

    Returns:
        Boxes sorted by descending score with columns x1, y1, x2, y2 (level-0 pixels,
        clipped to the slide), score, mean_prob, max_prob, n_tiles, area_um2.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; allowed: {', '.join(SCORES)}")
    prob = np.asarray(heatmap.prob, dtype=np.float64)
    pos = positive_mask(prob, threshold, min_neighbours)
    labels = _labels(pos, "components" if method == "merge" else method, eps_tiles, min_samples)
    if method == "merge" and top_n is not None:
        labels = merge_to_n(labels, top_n)
    n_labels = int(labels.max()) if labels.size else 0
    if n_labels == 0:
        return _empty()
    idx = np.arange(1, n_labels + 1)
    values = np.nan_to_num(prob, nan=0.0)
    n_tiles = np.asarray(ndimage.sum_labels(np.ones_like(values), labels, idx), dtype=np.int64)
    present = n_tiles > 0
    idx, n_tiles = idx[present], n_tiles[present]
    mean_prob = np.asarray(ndimage.mean(values, labels, idx), dtype=np.float64)
    max_prob = np.asarray(ndimage.maximum(values, labels, idx), dtype=np.float64)
    slices = ndimage.find_objects(labels)
    rows = np.array([[slices[i - 1][0].start, slices[i - 1][0].stop - 1] for i in idx])
    cols = np.array([[slices[i - 1][1].start, slices[i - 1][1].stop - 1] for i in idx])
    # With overlapping tiles (stride < tile side) a cell stands for the stride-wide square at
    # its tile's centre, so that a box does not grow by the overlap.
    off = max(0.0, (heatmap.tile_size - heatmap.stride) / 2)
    side = heatmap.tile_size - 2 * off
    x0, y0 = heatmap.origin_x + off, heatmap.origin_y + off
    x1 = np.clip(x0 + cols[:, 0] * heatmap.stride, 0, heatmap.slide_width)
    x2 = np.clip(x0 + cols[:, 1] * heatmap.stride + side, 0, heatmap.slide_width)
    y1 = np.clip(y0 + rows[:, 0] * heatmap.stride, 0, heatmap.slide_height)
    y2 = np.clip(y0 + rows[:, 1] * heatmap.stride + side, 0, heatmap.slide_height)
    scores = {
        "max": max_prob,
        "mean": mean_prob,
        "area_weighted": mean_prob * np.sqrt(n_tiles),
    }[score]
    df = pd.DataFrame(
        {
            "x1": x1.astype(np.float64),
            "y1": y1.astype(np.float64),
            "x2": x2.astype(np.float64),
            "y2": y2.astype(np.float64),
            "score": scores,
            "mean_prob": mean_prob,
            "max_prob": max_prob,
            "n_tiles": n_tiles,
            "area_um2": (x2 - x1) * (y2 - y1) * heatmap.mpp**2,
        }
    )
    min_px = min_size_um / heatmap.mpp if heatmap.mpp > 0 else 0.0
    df = df[((df.x2 - df.x1) >= min_px) & ((df.y2 - df.y1) >= min_px)]
    df = df[(df.x2 > df.x1) & (df.y2 > df.y1)]
    if nms_iou is not None and len(df):
        keep = nms(df[["x1", "y1", "x2", "y2"]].to_numpy(), df.score.to_numpy(), nms_iou)
        df = df.iloc[keep]
    df = df.sort_values("score", ascending=False, kind="stable")
    if top_n is not None:
        df = df.head(top_n)
    return df.reset_index(drop=True)


def boxes_to_digilut(df: pd.DataFrame, filename: str) -> pd.DataFrame:
    """Boxes in the DigiLut submission layout: filename, x1, x2, y1, y2 (rounded ints)."""
    out = pd.DataFrame({"filename": pd.Series([filename] * len(df), dtype=object)})
    for col in ("x1", "x2", "y1", "y2"):
        out[col] = np.rint(df[col].to_numpy(dtype=np.float64)).astype(np.int64)
    return out[DIGILUT_COLUMNS]
