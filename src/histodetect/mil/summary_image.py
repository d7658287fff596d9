"""Summary images of bags: ``k`` tiles of a bag read from its slides and laid out as one grid.

The method of a PANDA write-up (issue 26, item 4): a bag's tiles are chosen by a score (at
random, or the detection ensemble's tile probability), read from the slide at the tiling's
level and size, and concatenated into one ``side x side`` grid (``side = ceil(sqrt(k))``) that
a CNN classifies as a whole. Tile ``i`` of a draw fills grid cell ``i`` (row ``i // side``,
column ``i % side``); cells past the bag's tiles stay white. Training augments each tile with
one of the eight symmetries of the square (D4) and shuffles the tile order.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openslide
import pandas as pd

from histodetect.errors import InputError
from histodetect.mil.data import Bag
from histodetect.slides.reader import SlideReader
from histodetect.slides.threads import reading_threads

SCORES = ("random", "detection")
TILE_COLUMNS = ["x", "y", "level", "read_px", "tile_px"]


def grid_side(k: int) -> int:
    """Cells along each side of the grid that holds ``k`` tiles."""
    return max(1, math.ceil(math.sqrt(k)))


def assemble(tiles: np.ndarray, k: int) -> np.ndarray:
    """The summary image of ``(n, px, px, 3)`` uint8 tiles (``n <= k``): tile ``i`` at grid
    cell ``i`` in row-major order, white elsewhere; ``(side * px, side * px, 3)`` uint8."""
    if len(tiles) > k:
        raise ValueError(f"{len(tiles)} tiles for a grid of {k}")
    side, px = grid_side(k), int(tiles.shape[1])
    image = np.full((side * px, side * px, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, side)
        image[r * px : (r + 1) * px, c * px : (c + 1) * px] = tile
    return image


def d4(tile: np.ndarray, code: int) -> np.ndarray:
    """One of the eight symmetries of the square: ``code % 4`` quarter turns, then a mirror
    when ``code >= 4``."""
    out = np.rot90(tile, code % 4)
    return np.ascontiguousarray(out[:, ::-1] if code >= 4 else out)


def choose_tiles(
    n: int, k: int, score: str, scores: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Indices of at most ``k`` of a bag's ``n`` tiles, in grid order.

    ``random``: ``k`` drawn without replacement (a new draw per call); ``detection``: the
    ``k`` highest ``scores``, in random order (only the order differs between draws).
    """
    if n == 0:
        return np.zeros(0, np.int64)
    if score == "random":
        return rng.choice(n, min(k, n), replace=False).astype(np.int64)
    if scores is None or len(scores) != n:
        raise ValueError(f"score {score!r} needs one score per tile ({n} tiles)")
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return rng.permutation(top).astype(np.int64)


class TileSource:
    """A bag's tiles as the tiling wrote them: ``<tiles_dir>/<slide>.parquet`` (level-0 ``x``,
    ``y``, ``level``, ``read_px``, ``tile_px``) and ``<slide>.json`` (the slide's ``path``),
    with the detection ensemble's ``prob`` from ``<scores_dir>/<slide>.parquet`` when given.

    The tables of the last ``keep_bags`` bags and the last ``keep_slides`` open slides are
    kept (least recently used dropped); only the drawn tiles are read.
    """

    def __init__(
        self,
        tiles_dir: str | Path,
        scores_dir: str | Path | None = None,
        *,
        keep_bags: int = 256,
        keep_slides: int = 16,
    ) -> None:
        self.tiles_dir = Path(tiles_dir)
        self.scores_dir = None if scores_dir is None else Path(scores_dir)
        self.keep_bags, self.keep_slides = keep_bags, keep_slides
        self._tables: OrderedDict[str, pd.DataFrame] = OrderedDict()
        self._slides: OrderedDict[str, SlideReader] = OrderedDict()

    def slide_table(self, slide_id: str) -> pd.DataFrame:
        """The slide's tiles (``path`` and :data:`TILE_COLUMNS`, ``score`` with scores)."""
        path = self.tiles_dir / f"{slide_id}.parquet"
        try:
            table = pd.read_parquet(path)
            summary = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot read the tile table ({err})") from err
        missing = [c for c in TILE_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(path, f"the tile table lacks columns {missing}")
        table = table[TILE_COLUMNS].assign(path=str(summary.get("path", "")))
        if self.scores_dir is not None:
            table["score"] = self._scores(slide_id, table)
        return table.reset_index(drop=True)

    def _scores(self, slide_id: str, table: pd.DataFrame) -> np.ndarray:
        path = self.scores_dir / f"{slide_id}.parquet"  # type: ignore[operator]
        try:
            scored = pd.read_parquet(path, columns=["x", "y", "prob"])
        except (OSError, ValueError, KeyError) as err:
            raise InputError(path, f"cannot read the tile scores x, y, prob ({err})") from err
        prob = table.merge(scored, on=["x", "y"], how="left")["prob"].to_numpy(np.float64)
        if np.isnan(prob).any():
            raise InputError(path, f"{int(np.isnan(prob).sum())} tiles of {slide_id} have no score")
        return prob

    def table(self, bag: Bag) -> pd.DataFrame:
        """All tiles of the bag's slides, in slide then tile-table order (the feature files')."""
        table = self._tables.get(bag.bag_id)
        if table is None:
            parts = [self.slide_table(s) for s in bag.slide_ids]
            table = pd.concat(parts, ignore_index=True)
            self._tables[bag.bag_id] = table
            if len(self._tables) > self.keep_bags:
                self._tables.popitem(last=False)
        self._tables.move_to_end(bag.bag_id)
        return table

    def _slide(self, path: str) -> SlideReader:
        reader = self._slides.get(path)
        if reader is None:
            reader = self._slides[path] = SlideReader(path)
            if len(self._slides) > self.keep_slides:
                self._slides.popitem(last=False)[1].close()
        self._slides.move_to_end(path)
        return reader

    def read(self, bag: Bag, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Tiles ``index`` of the bag, ``(len(index), px, px, 3)`` uint8."""
        table = self.table(bag)
        px = int(table.tile_px.iloc[0]) if len(table) else 1
        out = np.empty((len(index), px, px, 3), np.uint8)
        rows = table.iloc[np.asarray(index, np.int64)]
        paths = rows["path"].astype(str).to_numpy()
        geometry = rows[TILE_COLUMNS].to_numpy(np.int64)
        for path in dict.fromkeys(paths):  # each slide's tiles as one batch, on the threads
            at = np.flatnonzero(paths == path)
            try:
                tiles = self._slide(path).read_tiles(geometry[at], threads=reading_threads())
            except (OSError, openslide.OpenSlideError) as err:
                raise InputError(path, f"cannot read a tile ({err})") from err
            for j, tile in zip(at, tiles, strict=True):
                out[j] = tile
        return out

    def scores(self, bag: Bag) -> np.ndarray | None:
        table = self.table(bag)
        return table["score"].to_numpy() if "score" in table.columns else None


def draw_images(
    source: TileSource,
    bag: Bag,
    k: int,
    score: str,
    rng: np.random.Generator,
    *,
    augment: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One summary image of ``bag`` and the indices of the tiles in it (grid order);
    ``augment``: each tile turned or mirrored at random (D4)."""
    n = len(source.table(bag))
    chosen = choose_tiles(n, k, score, source.scores(bag), rng)
    tiles = source.read(bag, chosen)
    if augment:
        tiles = np.stack([d4(t, int(rng.integers(8))) for t in tiles]) if len(tiles) else tiles
    if not len(tiles):
        raise InputError(bag.bag_id, "the bag has no tiles to draw a summary image from")
    return assemble(tiles, k), chosen
