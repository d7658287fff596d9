"""Where a bag model looked: per slide, the tiles' attention as QuPath GeoJSON and a PNG.

The attention of a slide is the fold models' mean weight of each of its tiles within its bag
(weights of a bag sum to 1). GeoJSON: one square per tile, level-0 px, with ``attention``,
``attention_x_uniform`` (attention times the bag's tile count: 1 is an even share) and
``attention_rank`` (1: most attended) in ``properties.measurements``, the name-to-number
object QuPath reads. PNG: the slide's thumbnail with one cell per tile (the tile's stride,
centred on it, at its level-0 position over the thumbnail's downsample) coloured by the
tile's attention (viridis, 0 to the slide's largest, with a colour bar); transparent where
there is no tile. The box overlays' drawing (:mod:`histodetect.slides.pictures`).

A survival or regression model also shares its bag's number out over the tiles
(:mod:`histodetect.mil.contributions`): each tile's score alone and its contribution are two
more measurements (``tile_risk`` and ``risk_contribution``; ``tile_value`` and
``value_contribution``), and a second PNG colours the tiles by their contribution (red raises
the bag's risk or value above the training bags' mean, blue lowers it; centred at 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histodetect.features.store import SlideFeatures
from histodetect.io import atomic_path
from histodetect.mil.contributions import (
    TileContributions,
    mean_contributions,
    measurement_names,
    tile_contributions,
)
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.models import BagModel, MilTask, score_bag
from histodetect.slides.pictures import MAX_WIDTH_PX, draw_value_grid, save_png, thumbnail_figure
from histodetect.slides.reader import SlideReader
from histodetect.slides.slide import THUMB_CACHE_BYTES, read_thumbnail
from histodetect.slides.threads import reading_threads


def label_text(label: str, kind: str, time_unit: str = "days") -> str:
    """A bag's label as a picture's title says it: survival's ``time:event`` as
    ``event at 21.8 months`` or ``censored at 21.8 months``; any other label as it is."""
    time, sep, event = str(label).partition(":")
    if kind != "survival" or not sep:
        return f"label {label}"
    said = "event" if event.strip() == "1" else "censored"
    return f"{said} at {float(time):.3g} {time_unit}"


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
    feats, start = slide_rows(source, bag, slide_id)
    return feats, weights[start : start + len(feats)], len(x)


def slide_contributions(
    models: Sequence[tuple[BagModel, MilTask]], source: FeatureSource, bag: Bag, slide_id: str
) -> tuple[SlideFeatures, TileContributions, int]:
    """The slide's features, its tiles' fold-mean attention, scores and contributions to the
    bag's risk or value (:mod:`histodetect.mil.contributions`) and the bag's size."""
    x = source.bag(bag)
    parts = mean_contributions([tile_contributions(model, task, x) for model, task in models])
    feats, start = slide_rows(source, bag, slide_id)
    return feats, parts.rows(start, start + len(feats)), len(x)


def slide_rows(source: FeatureSource, bag: Bag, slide_id: str) -> tuple[SlideFeatures, int]:
    """The slide's features and the bag row of its first tile (bags stack their slides)."""
    start = 0
    for sid in bag.slide_ids:
        feats = source.slide(sid)
        if sid == slide_id:
            return feats, start
        start += len(feats)
    raise KeyError(f"slide {slide_id} is not in bag {bag.bag_id}")


def attention_geojson(
    feats: SlideFeatures,
    attention: np.ndarray,
    bag_tiles: int,
    slide_id: str,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """A FeatureCollection of the slide's tiles with their attention as measurements, and
    ``extra`` per-tile values (name: one value per tile)."""
    extra = extra or {}
    for name, values in extra.items():
        if len(values) != len(attention):
            raise ValueError(f"{name}: {len(values)} values for {len(attention)} tiles")
    size = int(feats.attrs["size0"])
    rank = np.empty(len(attention), np.int64)
    rank[np.argsort(-attention, kind="stable")] = np.arange(1, len(attention) + 1)
    features = []
    columns = {name: np.asarray(values, float).tolist() for name, values in extra.items()}
    for i, ((x, y), a, r) in enumerate(
        zip(feats.coords.tolist(), attention.tolist(), rank.tolist(), strict=True)
    ):
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
                        **{name: values[i] for name, values in columns.items()},
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


@dataclass(frozen=True)
class AttentionGrid:
    """A slide's tile attention on its tile grid: ``values[row, col]`` (NaN: no tile), the
    grid's top-left corner ``left``, ``top`` and ``cell`` side in level-0 pixels."""

    values: np.ndarray
    left: float
    top: float
    cell: float


def attention_grid(feats: SlideFeatures, attention: np.ndarray) -> AttentionGrid:
    """The tiles' attention as a grid whose cell ``row, col`` covers the tile's stride,
    centred on the tile (as the detection heatmap's cells are)."""
    size = float(feats.attrs["size0"])
    stride = float(feats.attrs.get("stride0") or size)
    rows, cols = grid_of(feats)
    if not len(rows):
        return AttentionGrid(np.full((1, 1), np.nan), 0.0, 0.0, stride)
    r0, c0 = rows.min(), cols.min()
    values = np.full((rows.max() - r0 + 1, cols.max() - c0 + 1), np.nan)
    values[rows - r0, cols - c0] = attention
    off = (size - stride) / 2
    x, y = feats.coords[0]
    left = float(x) - (cols[0] - c0) * stride + off
    top = float(y) - (rows[0] - r0) * stride + off
    return AttentionGrid(values, left, top, stride)


def overlay_downsample(feats: SlideFeatures, slide_size: tuple[int, int], cell_px: int) -> float:
    """Level-0 pixels per thumbnail pixel: a tile spans ``cell_px`` pixels, unless the
    thumbnail would then be wider than the figure (:data:`MAX_WIDTH_PX`)."""
    stride = float(feats.attrs.get("stride0") or feats.attrs["size0"])
    return max(1.0, stride / cell_px, max(slide_size) / MAX_WIDTH_PX)


def slide_thumbnail(
    path: str | os.PathLike[str], feats: SlideFeatures, cell_px: int
) -> tuple[np.ndarray, float]:
    """The slide's RGB thumbnail for the overlay and its downsample (one pass over a level)."""
    with SlideReader(Path(path), cache_bytes=THUMB_CACHE_BYTES, threads=reading_threads()) as slide:
        ds = overlay_downsample(feats, slide.dimensions, cell_px)
        return read_thumbnail(slide, 1.0, ds)  # mpp 1: the downsample in level-0 pixels


def values_png(
    thumbnail: np.ndarray,
    downsample: float,
    feats: SlideFeatures,
    values: np.ndarray,
    path: str | os.PathLike[str],
    title: str,
    label: str,
    signed: bool = False,
) -> None:
    """The thumbnail with a value per tile over it: from 0 up to the slide's largest value, or
    (``signed``) red-blue, white at 0, symmetric about 0 up to its largest magnitude."""
    grid = attention_grid(feats, values)
    fig, ax = thumbnail_figure(thumbnail, title)
    finite = np.isfinite(grid.values).any()
    top = (
        float(np.nanmax(np.abs(grid.values) if signed else grid.values)) if finite else 1.0
    ) or 1.0
    draw_value_grid(
        fig, ax, grid.values, grid.left / downsample, grid.top / downsample,
        grid.cell / downsample, label=label, vmin=-top if signed else 0.0, vmax=top,
        alpha=0.6, cmap="RdBu_r" if signed else "viridis",
    )  # fmt: skip
    save_png(fig, path)


ATTENTION_LABEL = "attention (a bag's weights sum to 1)"
CONTRIBUTION_LABELS = {
    "survival": "risk contribution, attention x tile log risk (red raises, blue lowers)",
    "regression": "contribution to the predicted value (red raises, blue lowers)",
}
"""The contribution overlay's colour bar name per task."""


@dataclass(frozen=True)
class ContributionMap:
    """What a survival or regression slide adds to its attention outputs: its tiles'
    ``parts``, the task ``kind``, the contribution overlay's ``png`` (None: the GeoJSON's
    measurements only) and ``title``."""

    parts: TileContributions
    kind: str
    png: str | os.PathLike[str] | None
    title: str = ""


def write_attention(
    feats: SlideFeatures,
    attention: np.ndarray,
    bag_tiles: int,
    slide_id: str,
    geojson: str | os.PathLike[str],
    png: str | os.PathLike[str],
    thumbnail: np.ndarray,
    downsample: float,
    title: str = "",
    contribution: ContributionMap | None = None,
) -> None:
    """Write the slide's attention GeoJSON and its overlay on ``thumbnail`` (and, given a
    ``contribution``, the tiles' scores and contributions in the GeoJSON and their overlay)."""
    extra: dict[str, np.ndarray] = {}
    if contribution is not None:
        score, share = measurement_names(contribution.kind)
        extra = {score: contribution.parts.scores, share: contribution.parts.contributions}
    with atomic_path(geojson) as tmp:
        tmp.write_text(json.dumps(attention_geojson(feats, attention, bag_tiles, slide_id, extra)))
    values_png(thumbnail, downsample, feats, attention, png, title, ATTENTION_LABEL)
    if contribution is not None and contribution.png is not None:
        values_png(
            thumbnail, downsample, feats, contribution.parts.contributions, contribution.png,
            contribution.title, CONTRIBUTION_LABELS[contribution.kind], signed=True,
        )  # fmt: skip
