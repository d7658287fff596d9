"""Where a bag model looked: per slide, the tiles' attention as QuPath GeoJSON and a PNG.

The attention of a slide is the fold models' mean weight of each of its tiles within its bag
(weights of a bag sum to 1). GeoJSON: one square per tile, level-0 px, with ``attention``,
``attention_x_uniform`` (attention times the bag's tile count: 1 is an even share) and
``attention_rank`` (1: most attended) in ``properties.measurements``, the name-to-number
object QuPath reads. PNG: the tile grid, one ``cell_px`` square per tile, coloured by
attention relative to the slide's largest (viridis); white where there is no tile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from histodetect.features.store import SlideFeatures
from histodetect.io import atomic_path
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.models import BagModel, MilTask
from histodetect.mil.train import score_bag


def slide_attention(
    models: Sequence[tuple[BagModel, MilTask]] | None,
    source: FeatureSource,
    bag: Bag,
    slide_id: str,
    *,
    weights: np.ndarray | None = None,
) -> tuple[SlideFeatures, np.ndarray, int]:
    """The slide's features, its tiles' mean attention over ``models`` (or the bag's given
    tile ``weights``, in the feature files' order) and the bag's size."""
    x = source.bag(bag)
    if weights is None:
        assert models is not None
        weights = np.mean([score_bag(model, task, x)[1] for model, task in models], axis=0)
    elif len(weights) != len(x):
        raise ValueError(f"bag {bag.bag_id}: {len(weights)} tile weights for {len(x)} tiles")
    start = 0
    for sid in bag.slide_ids:
        feats = source.slide(sid)
        if sid == slide_id:
            return feats, weights[start : start + len(feats)], len(x)
        start += len(feats)
    raise KeyError(f"slide {slide_id} is not in bag {bag.bag_id}")


def attention_geojson(
    feats: SlideFeatures, attention: np.ndarray, bag_tiles: int, slide_id: str
) -> dict[str, Any]:
    """A FeatureCollection of the slide's tiles with their attention as measurements."""
    size = int(feats.attrs["size0"])
    rank = np.empty(len(attention), np.int64)
    rank[np.argsort(-attention, kind="stable")] = np.arange(1, len(attention) + 1)
    features = []
    for (x, y), a, r in zip(feats.coords.tolist(), attention.tolist(), rank.tolist(), strict=True):
        ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "tile",
                    "name": f"{slide_id} tile {r}",
                    "measurements": {
                        "attention": float(a),
                        "attention_x_uniform": float(a * bag_tiles),
                        "attention_rank": int(r),
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def grid_of(feats: SlideFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's grid ``row, col`` (from the file's grid, else its coordinates and stride)."""
    if "row" in feats.grid and "col" in feats.grid:
        return feats.grid["row"].astype(int), feats.grid["col"].astype(int)
    stride = int(feats.attrs.get("stride0") or feats.attrs["size0"])
    origin = feats.coords.min(0)
    cells = (feats.coords - origin) // stride
    return cells[:, 1].astype(int), cells[:, 0].astype(int)


def attention_image(feats: SlideFeatures, attention: np.ndarray, cell_px: int) -> np.ndarray:
    """``(rows * cell_px, cols * cell_px, 3)`` uint8: one cell per tile, white elsewhere."""
    rows, cols = grid_of(feats)
    r0, c0 = (rows.min(), cols.min()) if len(rows) else (0, 0)
    rows, cols = rows - r0, cols - c0
    shape = (rows.max() + 1, cols.max() + 1) if len(rows) else (1, 1)
    grid = np.full((*shape, 3), 255, np.uint8)
    top = attention.max() if len(attention) else 1.0
    colours = colormaps["viridis"](attention / (top or 1.0))[:, :3]
    grid[rows, cols] = (colours * 255).round().astype(np.uint8)
    return grid.repeat(cell_px, 0).repeat(cell_px, 1)


def write_attention(
    feats: SlideFeatures,
    attention: np.ndarray,
    bag_tiles: int,
    slide_id: str,
    geojson: str | os.PathLike[str],
    png: str | os.PathLike[str],
    cell_px: int = 8,
) -> None:
    """Write the slide's attention GeoJSON and overlay PNG."""
    with atomic_path(geojson) as tmp:
        tmp.write_text(json.dumps(attention_geojson(feats, attention, bag_tiles, slide_id)))
    with atomic_path(png) as tmp:
        Image.fromarray(attention_image(feats, attention, cell_px)).save(tmp, format="PNG")
