"""Slide overlay pictures: thumbnail, heatmap, tiles, predicted and true boxes (Agg only)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from histodetect.detection.heatmap import Heatmap
from histodetect.slides.pictures import (
    DPI,
    MAX_WIDTH_PX,
    draw_value_grid,
    save_png,
    thumbnail_figure,
)
from histodetect.slides.qc import tile_cover

__all__ = ["DPI", "MAX_WIDTH_PX", "overlay_png", "save_png"]
PRED_COLOR = (1.0, 0.0, 0.0)
GT_COLOR = (0.0, 0.8, 0.0)
TILE_COLOR = (0.2, 0.4, 1.0)


def _draw_boxes(
    ax: Axes, df: pd.DataFrame, ds: float, color: tuple[float, ...], label: bool
) -> None:
    """Rectangles (level-0 boxes scaled by ``1 / ds``), optionally with score labels."""
    for row in df.itertuples(index=False):
        x1, y1, x2, y2 = (float(getattr(row, c)) / ds for c in ("x1", "y1", "x2", "y2"))
        ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2.5)
        )
        score = getattr(row, "score", None)
        if label and score is not None:
            ax.text(
                x1,
                y1,
                f"{float(score):.2f}",
                color=color,
                fontsize=8,
                va="bottom",
                ha="left",
                bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "edgecolor": "none"},
            )


def _draw_tiles(ax: Axes, tiles: pd.DataFrame, shape: tuple[int, int], ds: float) -> None:
    """Kept tiles as one translucent raster on the thumbnail grid (fast for 100k tiles)."""
    cover = tile_cover(tiles, shape, ds)
    ax.imshow(
        np.ma.masked_equal(cover.astype(np.float64), 0.0),
        cmap=ListedColormap([TILE_COLOR]),
        alpha=0.3,
        interpolation="nearest",
        extent=(0, shape[1], shape[0], 0),
    )


def overlay_png(
    thumbnail: np.ndarray,
    thumb_downsample: float,
    path: str | os.PathLike[str],
    heatmap: Heatmap | None = None,
    pred_boxes: pd.DataFrame | None = None,
    gt_boxes: pd.DataFrame | None = None,
    tiles: pd.DataFrame | None = None,
    title: str = "",
) -> None:
    """Save a PNG of the slide thumbnail with heatmap, boxes and tiles.

    Args:
        thumbnail: RGB image ``(H, W, 3)`` uint8 of the whole slide.
        thumb_downsample: Level-0 pixels per thumbnail pixel.
        path: Output PNG path.
        heatmap: Tile probabilities, blended with a colormap (NaN transparent).
        pred_boxes: Predicted boxes (x1, y1, x2, y2, score), drawn red with scores.
        gt_boxes: Ground-truth boxes, drawn green.
        tiles: Tile table with row, col and stride (or size) in level-0 px, tinted blue.
        title: Figure title.
    """
    h, w = np.asarray(thumbnail).shape[:2]
    ds = float(thumb_downsample)
    fig, ax = thumbnail_figure(thumbnail, title)
    if heatmap is not None and heatmap.prob.size:
        off = (heatmap.tile_size - heatmap.stride) / 2
        left = (heatmap.origin_x + off) / ds
        top = (heatmap.origin_y + off) / ds
        draw_value_grid(
            fig, ax, heatmap.prob, left, top, heatmap.stride / ds, label="lesion probability"
        )
    if tiles is not None and len(tiles):
        _draw_tiles(ax, tiles, (h, w), ds)
    if gt_boxes is not None:
        _draw_boxes(ax, gt_boxes, ds, GT_COLOR, label=False)
    if pred_boxes is not None:
        _draw_boxes(ax, pred_boxes, ds, PRED_COLOR, label=True)
    save_png(fig, path)
