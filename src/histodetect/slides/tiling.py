"""Tile grids inside tissue, with coordinates in level-0 pixels."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from histodetect.columns import TILE_COLUMNS
from histodetect.errors import SlideError, name_some
from histodetect.slides.reader import SlideReader
from histodetect.slides.slide import (
    MPP_TOLERANCE,
    THUMB_CACHE_BYTES,
    choose_level,
    mpp_for_magnification,
    read_thumbnail,
    slide_mpp,
)
from histodetect.slides.threads import reading_threads
from histodetect.slides.tissue import TissueSettings, tissue_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingSettings:
    """Tile geometry in physical units."""

    tile_um: float = 128.0
    """Tile side in microns."""
    stride_um: float | None = None
    """Distance between neighbouring tiles in microns (``None``: the tile side, no overlap)."""
    target_mpp: float = 2.0
    """Resolution the model sees, um/px; ``tile_px = tile_um / target_mpp``."""
    target_mag: float | None = None
    """Objective magnification the model sees; when set it replaces ``target_mpp`` by
    ``10 / target_mag`` (40x = 0.25 um/px)."""
    min_tissue: float = 0.5
    """A tile is kept when at least this fraction of it is tissue."""
    max_upsample: float = 2.0
    """Most a slide coarser than the target may be magnified (read mpp / target mpp); a slide
    that would need more is refused. Up to it the factor is recorded and warned about."""
    tissue: TissueSettings = field(default_factory=TissueSettings)

    def __post_init__(self) -> None:
        for name in ("tile_um", "stride_um", "target_mpp", "target_mag"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"tiling.{name} must be positive, got {value}")
        if self.max_upsample < 1:
            raise ValueError(f"tiling.max_upsample must be at least 1, got {self.max_upsample}")

    @property
    def mpp(self) -> float:
        """Target um/px: from ``target_mag`` when set, else ``target_mpp``."""
        if self.target_mag is not None:
            return mpp_for_magnification(self.target_mag)
        return self.target_mpp

    @property
    def stride(self) -> float:
        """Stride in microns."""
        return self.tile_um if self.stride_um is None else self.stride_um


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

    A summed-area table kept only at the mask rows the squares' edges fall on (one pass over
    the mask sums the bands between them), so it costs O(mask + tiles) whatever the tile count.
    """
    h, w = mask.shape
    x1 = np.clip(np.round(x / ds).astype(np.int64), 0, w)
    y1 = np.clip(np.round(y / ds).astype(np.int64), 0, h)
    x2 = np.clip(np.round((x + size) / ds).astype(np.int64), 0, w)
    y2 = np.clip(np.round((y + size) / ds).astype(np.int64), 0, h)
    area = np.maximum((x2 - x1) * (y2 - y1), 1)
    if mask.size == 0:
        return np.zeros(len(area))
    edges = np.unique(np.concatenate([[0, h], y1, y2]))  # rows where a sum is needed, 0..h
    rows = mask.view(np.uint8) if mask.dtype == bool else mask
    bands = np.empty((len(edges) - 1, w), np.int64)  # column sums of the rows between edges
    for i in range(len(edges) - 1):  # a loop of band sums: 10x faster than np.add.reduceat
        rows[edges[i] : edges[i + 1]].sum(axis=0, dtype=np.int64, out=bands[i])
    sat = np.zeros((len(edges), w + 1), np.int64)  # sat[i, j]: mask[:edges[i], :j].sum()
    np.cumsum(bands, axis=0, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    r1, r2 = np.searchsorted(edges, y1), np.searchsorted(edges, y2)
    inside = sat[r2, x2] - sat[r1, x2] - sat[r2, x1] + sat[r1, x1]
    return inside / area


def tile_slide(
    path: str,
    slide_id: str,
    settings: TilingSettings,
    mpp_override: float | None = None,
) -> TiledSlide:
    """Find tissue and lay a tile grid over it.

    Tiles lie on a grid anchored at level-0 pixel (0, 0): ``x = col * stride`` and
    ``y = row * stride`` (level-0 px); only tiles fully inside the slide are kept.

    Raises:
        SlideError: for any failure of this slide (unreadable, no mpp, too coarse for the
            target, pixels that do not decode, a segmentation that fails), naming the file and
            the cause in one line. Only a ``MemoryError`` passes through as is.
    """
    try:
        return _tile_slide(path, slide_id, settings, mpp_override)
    except (SlideError, MemoryError):
        raise
    except Exception as err:  # a failure we did not foresee still names the slide
        raise SlideError(path, f"tiling failed ({_describe(err)})") from err


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def upsample_factor(read_mpp: float, target_mpp: float) -> float:
    """How much tiles read at ``read_mpp`` are magnified to reach ``target_mpp`` (1: none).

    Within :data:`~histodetect.slides.slide.MPP_TOLERANCE` of the target counts as a match.
    """
    factor = read_mpp / target_mpp
    return 1.0 if factor <= 1 + MPP_TOLERANCE else factor


def _tile_slide(
    path: str, slide_id: str, settings: TilingSettings, mpp_override: float | None
) -> TiledSlide:
    start = time.perf_counter()
    with SlideReader(path, cache_bytes=THUMB_CACHE_BYTES, threads=reading_threads()) as slide:
        mpp0 = slide_mpp(slide.slide, path, mpp_override)
        choice = choose_level(slide.level_downsamples, mpp0, settings.tile_um, settings.mpp)
        read_mpp = mpp0 * choice.downsample
        upsample = check_upsample(path, slide_id, read_mpp, settings)
        try:
            thumb, ds = read_thumbnail(slide, mpp0, settings.tissue.mpp)
        except Exception as err:  # openslide raises plain OpenSlideError on corrupt tiles
            raise SlideError(path, f"could not decode the slide's pixels ({err})") from None
        w0, h0 = slide.dimensions
    # A slide coarser than tiling.tissue.mpp is segmented at its own resolution.
    thumb_mpp = mpp0 * ds
    if thumb_mpp > settings.tissue.mpp * (1 + MPP_TOLERANCE):
        log.info(
            "%s: tissue found at the slide's own %.3g um/px (tiling.tissue.mpp is %g)",
            slide_id,
            thumb_mpp,
            settings.tissue.mpp,
        )
    thumb_settings = TissueSettings(**{**settings.tissue.__dict__, "mpp": thumb_mpp})
    try:
        mask = tissue_mask(thumb, thumb_settings)
    except Exception as err:
        cause = f"tissue segmentation ({settings.tissue.method}) failed ({_describe(err)})"
        raise SlideError(path, cause) from err
    size = choice.size0
    stride = max(1, round(settings.stride / mpp0))
    cols = (w0 - size) // stride + 1 if w0 >= size else 0
    rows = (h0 - size) // stride + 1 if h0 >= size else 0
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    frac = tile_fractions(mask, cc * stride, rr * stride, size, ds)
    keep = frac >= settings.min_tissue
    tiles = pd.DataFrame(
        {
            "slide_id": slide_id,
            "x": (cc[keep] * stride).astype(np.int64),
            "y": (rr[keep] * stride).astype(np.int64),
            "size": np.int64(size),
            "row": rr[keep].astype(np.int64),
            "col": cc[keep].astype(np.int64),
            "level": np.int64(choice.level),
            "read_px": np.int64(choice.read_px),
            "tile_px": np.int64(choice.tile_px),
            "tissue": frac[keep].astype(np.float32),
            "stride": np.int64(stride),
            "mpp": np.float64(read_mpp),
        },
        columns=TILE_COLUMNS,
    )
    tissue_mm2 = float(mask.sum()) * (thumb_mpp / 1000.0) ** 2
    summary = {
        "slide_id": slide_id,
        "path": str(path),
        "width": w0,
        "height": h0,
        "mpp": mpp0,
        "target_mpp": settings.mpp,
        "level": choice.level,
        "level_downsample": choice.downsample,
        "level_mpp": read_mpp,
        "upsample": round(upsample, 3),
        "tile_size_level0": size,
        "stride_level0": stride,
        "read_px": choice.read_px,
        "tile_px": choice.tile_px,
        "tissue_method": settings.tissue.method,
        "tissue_mpp": round(thumb_mpp, 4),
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
            read_mpp,
        )
    return TiledSlide(tiles, thumb, ds, mask, summary)


def check_upsample(path: str, slide_id: str, read_mpp: float, settings: TilingSettings) -> float:
    """The upsampling factor of a slide's tiles; warns when above 1, refuses past the limit.

    Raises:
        SlideError: when tiles would be magnified more than ``settings.max_upsample``.
    """
    factor = upsample_factor(read_mpp, settings.mpp)
    if factor > settings.max_upsample:
        raise SlideError(
            path,
            f"the slide is {read_mpp:.3g} um/px, coarser than the {settings.mpp:g} um/px the "
            f"model sees: its tiles would be upsampled {factor:.1f}x, more than "
            f"tiling.max_upsample ({settings.max_upsample:g})",
        )
    if factor > 1:
        log.warning(
            "%s: slide at %.3g um/px, tiles upsampled %.2fx to %g um/px (tiling.max_upsample %g)",
            slide_id,
            read_mpp,
            factor,
            settings.mpp,
            settings.max_upsample,
        )
    return factor


def qc_view(tiled: TiledSlide, max_px: int = 1600) -> tuple[np.ndarray, float, np.ndarray]:
    """Thumbnail, its downsample and the mask, reduced so the longer side is at most ``max_px``.

    Keeps the QC figure's size (and memory) the same whatever the slide's size.
    """
    k = max(1, -(-max(tiled.thumbnail.shape[:2]) // max_px))
    if k == 1:
        return tiled.thumbnail, tiled.thumb_downsample, tiled.mask
    thumb = np.asarray(Image.fromarray(tiled.thumbnail).reduce(k))
    h, w = thumb.shape[:2]
    return thumb, tiled.thumb_downsample * k, tiled.mask[::k, ::k][:h, :w]


def settings_from_config(cfg: dict) -> TilingSettings:
    """Build :class:`TilingSettings` from the ``tiling`` section of the config."""
    cfg = dict(cfg)
    tissue = TissueSettings(**cfg.pop("tissue", {}))
    return TilingSettings(**cfg, tissue=tissue)


def failed_tiling(slide_id: str, path: str, error: Exception) -> TiledSlide:
    """The record of a slide that could not be tiled: no tiles, and the error in its summary."""
    tiles = pd.DataFrame({c: pd.Series(dtype="int64") for c in TILE_COLUMNS})
    tiles["slide_id"] = tiles["slide_id"].astype(str)
    cause = getattr(error, "cause", str(error))
    summary = {
        "slide_id": slide_id,
        "path": str(path),
        "tiles": 0,
        "status": "failed",
        "error": cause,
    }
    blank = np.full((64, 64, 3), 255, np.uint8)
    return TiledSlide(tiles, blank, 1.0, np.zeros((64, 64), bool), summary)


def slide_status(summary: dict[str, object]) -> str:
    """``ok``, ``no tissue`` or ``failed`` for one slide's tiling summary."""
    if summary.get("status") == "failed":
        return "failed"
    return "ok" if int(summary.get("tiles", 0)) > 0 else "no tissue"


def summarise(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Cohort tiling table with a ``status`` column: ok, no tissue or failed (with the error)."""
    table = pd.DataFrame(rows)
    table["status"] = [slide_status(r) for r in rows]
    if "error" not in table:
        table["error"] = ""
    return table


def excluded_report(table: pd.DataFrame) -> str:
    """One line naming the slides of a :func:`summarise` table left out, and why ('' if none)."""
    bad = table[table["status"] != "ok"]
    if bad.empty:
        return ""
    names = name_some(
        (
            f"{r.slide_id} ({r.path}): {r.error if r.status == 'failed' else 'no tissue tiles'}"
            for r in bad.itertuples()
        ),
        sep="; ",
    )
    return f"{len(bad)} of {len(table)} slides left out of the cohort: {names}"
