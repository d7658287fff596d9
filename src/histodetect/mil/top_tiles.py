"""The most attended tiles of a few labelled bags as one report picture: per bag (a row, with
its id, label and call) its ``k`` tiles of highest attention, each read from its slide at the
tile's level-0 corner (at the pyramid level nearest the display size).

The bags are the labelled test bags, ranked by the fold ensemble's attention; where there are
none (``split.test_fraction: 0``: every bag is out of fold) the training bags, each ranked by
the attention of the one fold model that did not train on it, the model that scored it out
of fold (:func:`scoring_models`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from histodetect.mil.attention import slide_attention
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.figures import panels
from histodetect.mil.models import BagModel, MilTask
from histodetect.slides.pictures import DPI, TITLE_PAD_PX, fit_text, line_px, save_png, wrap_px
from histodetect.slides.reader import SlideReader
from histodetect.slides.threads import reading_threads

M = TypeVar("M")
SHOWN = {"test": "test bags", "train": "out-of-fold bags"}
"""The picture's name of the bags of each split it shows."""


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


def shown_split(table: pd.DataFrame) -> str:
    """The split whose labelled bags the picture shows (of ``predictions.tsv``): ``test``, or
    ``train`` (out of fold) where no test bag carries a label, as the ROC's panels do."""
    return panels(table)[0][0]


def scoring_models(models: Sequence[M], folds: Sequence[int], bag: Bag) -> list[M]:
    """The models whose attention ranks ``bag``'s tiles (``folds[i]``: ``models[i]``'s fold):
    all of them for a test bag (the ensemble that called it); for a training bag the one
    model of its fold (``bag.fold``), which did not train on it and scored it out of fold."""
    if bag.fold < 0:
        return list(models)
    own = [m for m, fold in zip(models, folds, strict=True) if fold == bag.fold]
    if not own:
        raise ValueError(f"bag {bag.bag_id}: no model of its fold {bag.fold} in {list(folds)}")
    return own


def pick_bags(part: pd.DataFrame, classes: Sequence[str], n: int) -> list[str]:
    """Up to ``n`` bag ids, taken in turn from each class (so every class shows)."""
    queues = [list(part.bag_id[part.label == str(c)]) for c in classes]
    picked: list[str] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def pick_spread(part: pd.DataFrame, n: int, column: str = "target") -> list[str]:
    """Up to ``n`` bag ids spread evenly over a numeric ``column`` (lowest to highest; the
    label, or survival's risk)."""
    ranked = part.sort_values(column, kind="stable").bag_id.tolist()
    if len(ranked) <= n:
        return ranked
    return [ranked[int(i)] for i in np.linspace(0, len(ranked) - 1, n).round()]


def read_top_tiles(
    tiles: Sequence[TopTile], slide_paths: dict[str, str | Path], display_px: int
) -> dict[tuple[str, int, int], np.ndarray]:
    """Each tile's pixels by ``(slide_id, x, y)``, read at the pyramid level nearest
    ``display_px`` across: a slide's tiles in one batch on the job's reading threads."""
    by_slide: dict[str, list[TopTile]] = {}
    for tile in tiles:
        by_slide.setdefault(tile.slide_id, []).append(tile)
    pixels: dict[tuple[str, int, int], np.ndarray] = {}
    for slide_id, own in by_slide.items():
        with SlideReader(slide_paths[slide_id]) as slide:
            locations = []
            for tile in own:
                level = slide.get_best_level_for_downsample(max(tile.size / display_px, 1.0))
                side = max(1, round(tile.size / slide.level_downsamples[level]))
                locations.append((tile.x, tile.y, level, side, side))
            read = slide.read_tiles(locations, threads=reading_threads())
        pixels.update(((slide_id, t.x, t.y), rgb) for t, rgb in zip(own, read, strict=True))
    return pixels


def top_tiles_png(
    rows: Sequence[tuple[str, str, str, list[TopTile]]],
    slide_paths: dict[str, str | Path],
    path: str | os.PathLike[str],
    display_px: int = 128,
    *,
    split: str = "test",
    judged: bool = True,
) -> None:
    """One row per bag (``bag_id``, label, call, its top tiles) of ``split`` (``test``, or
    ``train``: out of fold, see :data:`SHOWN`): each tile read from its slide at its level-0
    corner, titled with its slide, rank and attention; with ``judged`` a wrong call in red
    (a number's prediction is never judged). Every title is wrapped to the width it
    has (a tile's: its cell; the picture's: the figure), the rows made taller for its lines."""
    k = max((len(tiles) for *_, tiles in rows), default=1) or 1
    cell = display_px / DPI + 0.35
    width = 1.6 + k * cell
    cell_text = cell * DPI - 2 * TITLE_PAD_PX
    titles = [[_tile_title(t, tiles, cell_text) for t in tiles] for *_, tiles in rows]
    extra = max((t.count("\n") for row in titles for t in row), default=0) * line_px(7) / DPI
    which = SHOWN[split]
    heading, size = fit_text(
        f"Most attended tiles of {which} (attention weight"
        + ("; red: wrong call)" if judged else ")"),
        width * DPI - 2 * TITLE_PAD_PX, 9.0, 7.0,
    )  # fmt: skip
    top = 0.3 + heading.count("\n") * line_px(size) / DPI
    fig = Figure(figsize=(width, top + max(len(rows), 1) * (cell + extra)), dpi=DPI)
    if not rows:
        note = wrap_px(f"no labelled {which}", width * DPI - 2 * TITLE_PAD_PX, 10)
        fig.text(0.5, 0.5, note, ha="center", va="center")
    axes = np.atleast_2d(fig.subplots(max(len(rows), 1), k, squeeze=False))
    if not rows:
        axes[0, 0].set_axis_off()
    pixels = read_top_tiles([t for *_, tiles in rows for t in tiles], slide_paths, display_px)
    for r, (bag_id, label, call, tiles) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                colour = "black" if label == call or not judged else "tab:red"
                name = wrap_px(bag_id, 1.6 * DPI - 2 * TITLE_PAD_PX, 8)
                ax.set_ylabel(f"{name}\nlabel {label}\ncall {call}", fontsize=8,
                              color=colour, rotation=0, ha="right", va="center")  # fmt: skip
            if c >= len(tiles):
                ax.set_axis_off()
                continue
            tile = tiles[c]
            ax.imshow(pixels[(tile.slide_id, tile.x, tile.y)])
            ax.set_title(titles[r][c], fontsize=7)
    fig.suptitle(heading, fontsize=size)
    fig.tight_layout()
    save_png(fig, path)


def _tile_title(tile: TopTile, tiles: list[TopTile], width_px: float) -> str:
    """``#rank weight``, after the tile's slide where its bag's tiles come from several."""
    title = f"#{tile.rank} {tile.weight:.3f}"
    if len({t.slide_id for t in tiles}) > 1:
        title = f"{tile.slide_id} {title}"
    return wrap_px(title, width_px, 7)
