"""Tile labels from their overlap with ground-truth lesion boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from histodetect.columns import LABEL_COLUMNS
from histodetect.geometry import tile_box_overlap


@dataclass(frozen=True)
class LabelSettings:
    """How overlap turns into a label.

    ``overlap`` is ``"iou"`` (IoU of tile and box, the DigiLut write-up's rule) or
    ``"coverage"`` (fraction of the tile inside lesion boxes). A tile is positive at
    ``overlap >= positive``, negative at ``overlap <= negative`` and ignored (-1) between.
    """

    overlap: str = "coverage"
    positive: float = 0.5
    negative: float = 0.0


def label_tiles(tiles: pd.DataFrame, boxes: pd.DataFrame, settings: LabelSettings) -> pd.DataFrame:
    """Add ``iou``, ``coverage`` and ``label`` to a slide's tile table."""
    if settings.overlap not in ("iou", "coverage"):
        raise ValueError(f"unknown overlap {settings.overlap!r}; use 'iou' or 'coverage'")
    if settings.negative > settings.positive:
        raise ValueError("label thresholds need negative <= positive")
    tile_xyxy = np.stack(
        [tiles.x, tiles.y, tiles.x + tiles["size"], tiles.y + tiles["size"]], axis=1
    ).astype(np.float64)
    box_xyxy = boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64).reshape(-1, 4)
    iou, coverage = tile_box_overlap(tile_xyxy, box_xyxy)
    value = iou if settings.overlap == "iou" else coverage
    label = np.full(len(tiles), -1, np.int64)
    label[value >= settings.positive] = 1
    label[(value <= settings.negative) & (label != 1)] = 0
    out = tiles.copy()
    out["iou"] = iou.astype(np.float32)
    out["coverage"] = coverage.astype(np.float32)
    out["label"] = label
    return out[LABEL_COLUMNS]
