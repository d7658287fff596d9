"""The most attended tiles of a few test bags as one report picture: per bag (a row, with its
id, label and call) its ``k`` tiles of highest fold-ensemble attention, each read from its
slide at the tile's level-0 corner (at the pyramid level nearest the display size)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from histodetect.mil.attention import slide_attention
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.models import BagModel, MilTask
from histodetect.slides.pictures import DPI, save_png
from histodetect.slides.reader import SlideReader


@dataclass(frozen=True)
class TopTile:
    """One attended tile: its slide, level-0 corner and side, and its attention rank/weight."""

    slide_id: str
    x: int
    y: int
    size: int
    rank: int
    weight: float


def top_tiles(
    models: Sequence[tuple[BagModel, MilTask]] | None,
    source: FeatureSource,
    bag: Bag,
    k: int,
    *,
    weights: np.ndarray | None = None,
) -> list[TopTile]:
    """The ``k`` tiles of ``bag`` with the most ensemble attention (or the bag's given tile
    ``weights``, e.g. a summary-image model's occlusion effects), most attended first."""
    found = []
    for slide_id in bag.slide_ids:
        feats, attention, _ = slide_attention(models, source, bag, slide_id, weights=weights)
        size = int(feats.attrs["size0"])
        found += [
            (float(w), slide_id, int(x), int(y), size)
            for (x, y), w in zip(feats.coords.tolist(), attention.tolist(), strict=True)
        ]
    found.sort(key=lambda t: -t[0])
    return [TopTile(s, x, y, size, i + 1, w) for i, (w, s, x, y, size) in enumerate(found[:k])]


def pick_bags(part: pd.DataFrame, classes: Sequence[str], n: int) -> list[str]:
    """Up to ``n`` bag ids, taken in turn from each class (so every class shows)."""
    queues = [list(part.bag_id[part.label == str(c)]) for c in classes]
    picked: list[str] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def read_tile(slide: SlideReader, tile: TopTile, display_px: int) -> np.ndarray:
    """The tile's pixels, read at the pyramid level nearest ``display_px`` across."""
    level = slide.get_best_level_for_downsample(max(tile.size / display_px, 1.0))
    ds = slide.level_downsamples[level]
    side = max(1, round(tile.size / ds))
    return slide.read_region((tile.x, tile.y), level, (side, side))


def top_tiles_png(
    rows: Sequence[tuple[str, str, str, list[TopTile]]],
    slide_paths: dict[str, str | Path],
    path: str | os.PathLike[str],
    display_px: int = 128,
) -> None:
    """One row per bag (``bag_id``, label, call, its top tiles): each tile read from its slide
    at its level-0 corner, titled with its slide, rank and attention."""
    k = max((len(tiles) for *_, tiles in rows), default=1) or 1
    cell = display_px / DPI + 0.35
    fig = Figure(figsize=(1.6 + k * cell, 0.3 + max(len(rows), 1) * cell), dpi=DPI)
    if not rows:
        fig.text(0.5, 0.5, "no labelled test bags", ha="center", va="center")
    axes = np.atleast_2d(fig.subplots(max(len(rows), 1), k, squeeze=False))
    readers: dict[str, SlideReader] = {}
    try:
        for r, (bag_id, label, call, tiles) in enumerate(rows):
            for c in range(k):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    colour = "black" if label == call else "tab:red"
                    ax.set_ylabel(f"{bag_id}\nlabel {label}\ncall {call}", fontsize=8,
                                  color=colour, rotation=0, ha="right", va="center")  # fmt: skip
                if c >= len(tiles):
                    ax.set_axis_off()
                    continue
                tile = tiles[c]
                if tile.slide_id not in readers:
                    readers[tile.slide_id] = SlideReader(slide_paths[tile.slide_id])
                ax.imshow(read_tile(readers[tile.slide_id], tile, display_px))
                title = f"#{tile.rank} {tile.weight:.3f}"
                if len({t.slide_id for t in tiles}) > 1:
                    title = f"{tile.slide_id} {title}"
                ax.set_title(title, fontsize=7)
    finally:
        for reader in readers.values():
            reader.close()
    fig.suptitle("Most attended tiles of test bags (attention weight; red: wrong call)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
