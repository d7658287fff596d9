"""Tiling QC picture: thumbnail, tissue outline and kept tiles, drawn with Pillow alone.

Matplotlib is not needed here: the picture is the thumbnail itself with two layers blended
in, so it costs a few tens of milliseconds per slide, not the second or so of a figure.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from histodetect.io import atomic_path

TILE_RGB = np.array([51, 102, 255], np.float32)
TILE_ALPHA = 0.3
OUTLINE_RGB = (26, 77, 230)
TITLE_PX = 30


def tile_cover(tiles: pd.DataFrame, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Boolean image of ``shape``: pixels whose level-0 centre lies in a kept tile's grid cell.

    A tile's cell is its ``stride`` x ``stride`` square at ``(col, row) * stride``, so tiles
    that overlap (stride < size) still colour each pixel once.
    """
    h, w = shape
    if tiles.empty:
        return np.zeros(shape, bool)
    stride = float(tiles["stride"].iloc[0] if "stride" in tiles else tiles["size"].iloc[0])
    rows = tiles["row"].to_numpy(np.int64)
    cols = tiles["col"].to_numpy(np.int64)
    grid = np.zeros((rows.max() + 2, cols.max() + 2), bool)
    grid[rows, cols] = True
    gy = np.minimum(
        ((np.arange(h) + 0.5) * downsample // stride).astype(np.int64), grid.shape[0] - 1
    )
    gx = np.minimum(
        ((np.arange(w) + 0.5) * downsample // stride).astype(np.int64), grid.shape[1] - 1
    )
    return grid[np.ix_(gy, gx)]


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it (image border counts)."""
    m = np.pad(np.asarray(mask, bool), 1)
    inner = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m[1:-1, 1:-1] & ~inner


def tiling_qc_png(
    thumb: np.ndarray,
    downsample: float,
    mask: np.ndarray,
    tiles: pd.DataFrame,
    path: str | os.PathLike[str],
    title: str = "",
) -> None:
    """Write the QC PNG: kept tiles tinted blue, the tissue mask outlined, a title band on top.

    ``thumb`` is the RGB thumbnail (``downsample`` level-0 px per pixel) and ``mask`` the
    tissue mask on the same pixel grid (see :func:`histodetect.slides.tiling.qc_view`).
    """
    out = np.array(np.asarray(thumb)[..., :3], dtype=np.uint8)  # a copy, drawn on
    h, w = out.shape[:2]
    cover = tile_cover(tiles, (h, w), downsample)
    tinted = out[cover] * (1 - TILE_ALPHA) + TILE_RGB * TILE_ALPHA
    out[cover] = tinted.round().astype(np.uint8)
    if np.shape(mask) != (h, w):
        raise ValueError(f"tissue mask {np.shape(mask)} does not match the {h} x {w} thumbnail")
    out[outline(mask)] = OUTLINE_RGB
    picture = Image.fromarray(out)
    if title:
        framed = Image.new("RGB", (w, h + TITLE_PX), (255, 255, 255))
        framed.paste(picture, (0, TITLE_PX))
        ImageDraw.Draw(framed).text((6, 8), title, fill=(0, 0, 0))
        picture = framed
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", compress_level=3)
