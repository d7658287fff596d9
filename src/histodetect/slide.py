"""Opening slides and resolving physical resolution (um per pixel) to pyramid levels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from histodetect.errors import SlideError

MPP_TOLERANCE = 0.05
"""Relative slack when matching a level's mpp to a target (scanners round their mpp)."""


def open_slide(path: str | Path) -> openslide.OpenSlide:
    """Open a slide with OpenSlide, or raise :class:`SlideError` saying why not."""
    p = Path(path)
    if not p.exists():
        raise SlideError(p, "slide file does not exist")
    if p.is_dir():
        raise SlideError(p, "is a folder; give the slide file (for DICOM, one .dcm of the series)")
    try:
        return openslide.OpenSlide(str(p))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(
            p, f"OpenSlide {openslide.__library_version__} cannot read this format"
        ) from None
    except openslide.OpenSlideError as err:
        raise SlideError(p, f"OpenSlide failed to read the file ({err})") from None


def slide_mpp(slide: openslide.OpenSlide, path: str | Path, override: float | None = None) -> float:
    """Level-0 microns per pixel: the sample sheet's value if given, else the file's.

    Never guesses: a slide with neither raises :class:`SlideError`.
    """
    if override is not None and not (isinstance(override, float) and math.isnan(override)):
        if override <= 0:
            raise SlideError(path, f"mpp override must be positive, got {override}")
        return float(override)
    props = slide.properties
    mpp_x = props.get(openslide.PROPERTY_NAME_MPP_X)
    mpp_y = props.get(openslide.PROPERTY_NAME_MPP_Y)
    if mpp_x is None or float(mpp_x) <= 0:
        raise SlideError(
            path, "no mpp in the slide metadata; set the 'mpp' column of the sample sheet"
        )
    if mpp_y is not None and abs(float(mpp_y) - float(mpp_x)) > MPP_TOLERANCE * float(mpp_x):
        raise SlideError(
            path, f"non-square pixels (mpp-x {mpp_x}, mpp-y {mpp_y}) are not supported"
        )
    return float(mpp_x)


@dataclass(frozen=True)
class LevelChoice:
    """Where to read a tile of a given physical size from."""

    level: int
    downsample: float
    size0: int
    """Tile side in level-0 pixels."""
    read_px: int
    """Tile side in pixels at ``level`` (resized to ``tile_px`` when different)."""
    tile_px: int
    """Tile side in pixels at the target mpp."""


def choose_level(
    downsamples: tuple[float, ...], mpp0: float, tile_um: float, target_mpp: float
) -> LevelChoice:
    """Pick the coarsest pyramid level that is not coarser than ``target_mpp``.

    A level whose mpp matches the target within :data:`MPP_TOLERANCE` is read as is;
    otherwise the nearest finer level is read and resized down to the target.
    """
    if target_mpp <= 0 or tile_um <= 0:
        raise ValueError("tile_um and target_mpp must be positive")
    limit = target_mpp * (1 + MPP_TOLERANCE)
    level = 0
    for i, ds in enumerate(downsamples):
        if mpp0 * ds <= limit and ds >= downsamples[level]:
            level = i
    ds = float(downsamples[level])
    size0 = round(tile_um / mpp0)
    tile_px = round(tile_um / target_mpp)
    read_px = max(1, round(size0 / ds))
    if abs(read_px - tile_px) <= 1:
        read_px = tile_px
    return LevelChoice(level, ds, size0, read_px, tile_px)


def read_thumbnail(
    slide: openslide.OpenSlide, mpp0: float, thumb_mpp: float
) -> tuple[np.ndarray, float]:
    """RGB image of the whole slide at about ``thumb_mpp`` um/px, read in strips.

    Returns the image and its downsample relative to level 0. Memory stays bounded by one strip
    of the level read plus the thumbnail itself.
    """
    w0, h0 = slide.dimensions
    ds = max(thumb_mpp / mpp0, 1.0)
    level = slide.get_best_level_for_downsample(ds)
    lds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    out_w, out_h = max(1, round(w0 / ds)), max(1, round(h0 / ds))
    scale = out_h / lh  # rows: the height scale, so the strips add up to out_h exactly
    strip = 2048
    rows: list[np.ndarray] = []
    done = 0
    for y in range(0, lh, strip):
        sh = min(strip, lh - y)
        region = slide.read_region((0, round(y * lds)), level, (lw, sh))
        target_h = round((y + sh) * scale) - done
        if target_h <= 0:
            continue
        rows.append(np.asarray(_rgb(region).resize((out_w, target_h), Image.BILINEAR)))
        done += target_h
    thumb = np.concatenate(rows, axis=0)[:out_h]
    return thumb, w0 / thumb.shape[1]


def _rgb(region: Image.Image) -> Image.Image:
    """Composite an RGBA region from OpenSlide on white (transparent = outside the scan)."""
    if region.mode != "RGBA":
        return region.convert("RGB")
    white = Image.new("RGB", region.size, (255, 255, 255))
    white.paste(region, mask=region.getchannel("A"))
    return white
