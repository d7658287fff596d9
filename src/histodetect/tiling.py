"""Tile grids inside tissue, with coordinates in level-0 pixels."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from histodetect.columns import TILE_COLUMNS
from histodetect.errors import SlideError
from histodetect.slide import choose_level, open_slide, read_thumbnail, slide_mpp
from histodetect.tissue import TissueSettings, tissue_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingSettings:
    """Tile geometry in physical units."""

    tile_um: float = 128.0
    """Tile side in microns."""
    target_mpp: float = 2.0
    """Resolution the model sees, um/px; ``tile_px = tile_um / target_mpp``."""
    min_tissue: float = 0.5
    """A tile is kept when at least this fraction of it is tissue."""
    tissue: TissueSettings = field(default_factory=TissueSettings)


@dataclass
class TiledSlide:
    """A slide's tiles and what was used to make them."""

    tiles: pd.DataFrame
    thumbnail: np.ndarray
    thumb_downsample: float
    mask: np.ndarray
    summary: dict[str, object]


def tile_fractions(
    mask: np.ndarray, x: np.ndarray, y: np.ndarray, size: float, ds: float
) -> np.ndarray:
    """Fraction of each level-0 square ``(x, y, size)`` covered by ``mask`` (at downsample ``ds``).

    Uses a summed-area table, so it costs O(mask + tiles) whatever the tile count.
    """
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    h, w = mask.shape
    x1 = np.clip(np.round(x / ds).astype(np.int64), 0, w)
    y1 = np.clip(np.round(y / ds).astype(np.int64), 0, h)
    x2 = np.clip(np.round((x + size) / ds).astype(np.int64), 0, w)
    y2 = np.clip(np.round((y + size) / ds).astype(np.int64), 0, h)
    inside = sat[y2, x2] - sat[y1, x2] - sat[y2, x1] + sat[y1, x1]
    area = np.maximum((x2 - x1) * (y2 - y1), 1)
    return inside / area


def tile_slide(
    path: str,
    slide_id: str,
    settings: TilingSettings,
    mpp_override: float | None = None,
) -> TiledSlide:
    """Find tissue and lay a non-overlapping tile grid over it.

    Tiles lie on a grid anchored at level-0 pixel (0, 0) with stride = tile side, so
    ``x = col * size`` and ``y = row * size``; only tiles fully inside the slide are kept.
    """
    start = time.perf_counter()
    slide = open_slide(path)
    try:
        mpp0 = slide_mpp(slide, path, mpp_override)
        choice = choose_level(slide.level_downsamples, mpp0, settings.tile_um, settings.target_mpp)
        try:
            thumb, ds = read_thumbnail(slide, mpp0, settings.tissue.mpp)
        except Exception as err:  # openslide raises plain OpenSlideError on corrupt tiles
            raise SlideError(path, f"could not decode the slide's pixels ({err})") from None
        w0, h0 = slide.dimensions
    finally:
        slide.close()
    thumb_settings = TissueSettings(**{**settings.tissue.__dict__, "mpp": mpp0 * ds})
    mask = tissue_mask(thumb, thumb_settings)
    size = choice.size0
    cols, rows = w0 // size, h0 // size
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    frac = tile_fractions(mask, cc * size, rr * size, size, ds)
    keep = frac >= settings.min_tissue
    tiles = pd.DataFrame(
        {
            "slide_id": slide_id,
            "x": (cc[keep] * size).astype(np.int64),
            "y": (rr[keep] * size).astype(np.int64),
            "size": np.int64(size),
            "row": rr[keep].astype(np.int64),
            "col": cc[keep].astype(np.int64),
            "level": np.int64(choice.level),
            "read_px": np.int64(choice.read_px),
            "tile_px": np.int64(choice.tile_px),
            "tissue": frac[keep].astype(np.float32),
        },
        columns=TILE_COLUMNS,
    )
    tissue_mm2 = float(mask.sum()) * (mpp0 * ds / 1000.0) ** 2
    summary = {
        "slide_id": slide_id,
        "path": str(path),
        "width": w0,
        "height": h0,
        "mpp": mpp0,
        "level": choice.level,
        "level_downsample": choice.downsample,
        "tile_size_level0": size,
        "read_px": choice.read_px,
        "tile_px": choice.tile_px,
        "tiles": len(tiles),
        "tissue_mm2": round(tissue_mm2, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if tiles.empty:
        log.warning("%s: no tissue tiles found (tissue %.2f mm2)", path, tissue_mm2)
    else:
        log.info(
            "%s: %d tiles at level %d (%.3f um/px read)",
            slide_id,
            len(tiles),
            choice.level,
            mpp0 * choice.downsample,
        )
    return TiledSlide(tiles, thumb, ds, mask, summary)


def settings_from_config(cfg: dict) -> TilingSettings:
    """Build :class:`TilingSettings` from the ``tiling`` section of the config."""
    cfg = dict(cfg)
    tissue = TissueSettings(**cfg.pop("tissue", {}))
    return TilingSettings(**cfg, tissue=tissue)


def summarise(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Cohort tiling table; slides with zero tiles are flagged in a ``status`` column."""
    table = pd.DataFrame(rows)
    table["status"] = np.where(table["tiles"] > 0, "ok", "NO TISSUE TILES")
    return table
