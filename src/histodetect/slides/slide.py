"""Opening slides and resolving physical resolution (um per pixel) to pyramid levels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image

from histodetect.errors import SlideError

MPP_TOLERANCE = 0.05
"""Relative slack when matching a level's mpp to a target (scanners round their mpp)."""
STRIP_PIXELS = 1 << 21
"""Most pixels read at once when making a thumbnail (8 MB of RGBA)."""
THUMB_CACHE_BYTES = 4 << 20
"""Tile caches (OpenSlide's, and the reader's decoded JPEG tiles) for a slide opened to read
its thumbnail: one pass, so small ones suffice."""
MAG_1X_MPP = 10.0
"""Microns per pixel at 1x: the usual convention 40x = 0.25, 20x = 0.5, 10x = 1.0 um/px."""


def mpp_for_magnification(magnification: float) -> float:
    """Microns per pixel of an objective magnification (``10 / magnification``)."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return MAG_1X_MPP / magnification


_MAGIC = {
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "BigTIFF",
    b"MM\x00+": "BigTIFF",
    b"\x89PNG": "PNG image",
    b"\xff\xd8\xff": "JPEG image",
    b"%PDF": "PDF document",
    b"PK\x03\x04": "ZIP archive",
}


def sniff_format(path: Path) -> str:
    """What the first bytes of a file say it is (``"unknown"`` when nothing matches)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "empty file" if not head else "unknown"


PLAIN_IMAGE_KINDS = ("PNG image", "JPEG image", "TIFF", "BigTIFF")
"""Contents that may be a plain (single-resolution) image when OpenSlide cannot open them."""


def open_slide(path: str | Path) -> openslide.AbstractSlide:
    """Open a slide with OpenSlide, or raise :class:`SlideError` saying why not.

    A file OpenSlide does not read that is a plain JPEG, PNG or non-tiled TIFF (a high-power
    field, a microscope image) opens as a one-level :class:`openslide.ImageSlide`, decoded
    once; it carries no mpp (:func:`slide_mpp` then needs the sample sheet's).
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(p, "slide file does not exist")
    if p.is_dir():
        raise SlideError(p, "is a folder; give the slide file (for DICOM, one .dcm of the series)")
    reader = f"OpenSlide {openslide.__library_version__}"
    try:
        return openslide.OpenSlide(str(p))
    except openslide.OpenSlideUnsupportedFormatError:
        kind = sniff_format(p)
        plain = plain_image(p, kind)
        if isinstance(plain, openslide.ImageSlide):
            return plain
        if kind in ("TIFF", "BigTIFF", "DICOM"):
            cause = f"{kind} header found but {reader} cannot read it: truncated or corrupt file ({p.stat().st_size} bytes)?"
        else:
            cause = f"{reader} cannot read this file: its content is {kind}, not a slide format"
            if plain:
                cause += f", nor a readable plain image ({plain})"
        raise SlideError(p, cause) from None
    except openslide.OpenSlideError as err:
        raise SlideError(p, f"{reader} failed to read the file ({err})") from None


def plain_image(path: Path, kind: str) -> openslide.ImageSlide | str | None:
    """``path`` as a decoded one-level slide if it is a plain JPEG, PNG or non-tiled TIFF.

    Returns None when the content is none of those (a tiled TIFF is a slide, never plain),
    and the decoder's complaint when it is one of them but does not decode.
    """
    if kind not in PLAIN_IMAGE_KINDS:
        return None
    if kind in ("TIFF", "BigTIFF") and _tiff_is_tiled(path):
        return None
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # decodes the whole image now: a broken one fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return openslide.ImageSlide(rgb)


def _tiff_is_tiled(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].is_tiled)  # type: ignore[union-attr]
    except Exception:  # not even a readable TIFF header: leave it to the slide error
        return True


def is_plain_image(slide: object) -> bool:
    """Whether an opened slide is a plain image (no pyramid, no metadata)."""
    return isinstance(slide, openslide.ImageSlide)


def slide_mpp(
    slide: openslide.AbstractSlide, path: str | Path, override: float | None = None
) -> float:
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
    if mpp_x is None and is_plain_image(slide):
        raise SlideError(
            path, "a plain image carries no mpp; set the 'mpp' column of the sample sheet"
        )
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


def read_thumbnail(slide: Any, mpp0: float, thumb_mpp: float) -> tuple[np.ndarray, float]:
    """RGB image of the whole slide at about ``thumb_mpp`` um/px, read in strips.

    A level within :data:`MPP_TOLERANCE` of ``thumb_mpp`` is returned as it is (no resampling);
    the returned downsample says what the image's resolution is.

    ``slide`` is an OpenSlide or a :class:`histodetect.slides.reader.SlideReader` (which also fixes the
    colours of some DICOM files). Returns the image and its downsample relative to level 0.
    Memory stays bounded by one strip (at most :data:`STRIP_PIXELS` pixels of the level read)
    plus the thumbnail itself.
    """
    w0, h0 = slide.dimensions
    ds = max(thumb_mpp / mpp0, 1.0)
    level = slide.get_best_level_for_downsample(ds)
    lds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    out_w, out_h = max(1, round(w0 / ds)), max(1, round(h0 / ds))
    if abs(lds / ds - 1) <= MPP_TOLERANCE:  # a level at the thumbnail's mpp: taken as it is
        out_w, out_h = lw, lh
    scale = out_h / lh  # rows: the height scale, so the strips add up to out_h exactly
    strip = max(1, min(2048, STRIP_PIXELS // max(lw, 1)))
    thumb = np.empty((out_h, out_w, 3), np.uint8)
    done = 0
    for y in range(0, lh, strip):
        sh = min(strip, lh - y)
        target_h = min(round((y + sh) * scale), out_h) - done
        if target_h <= 0:
            continue
        region = slide.read_region((0, round(y * lds)), level, (lw, sh))
        if isinstance(region, np.ndarray) and region.shape[:2] == (target_h, out_w):
            thumb[done : done + target_h] = region[..., :3]  # the level is the thumbnail's size
        else:
            image = _rgb(region) if isinstance(region, Image.Image) else Image.fromarray(region)
            image = image.resize((out_w, target_h), Image.BILINEAR)
            thumb[done : done + target_h] = np.asarray(image)
        done += target_h
    thumb = thumb[:done]
    return thumb, w0 / thumb.shape[1]


def _rgb(region: Image.Image) -> Image.Image:
    """Composite an RGBA region from OpenSlide on white (transparent = outside the scan)."""
    if region.mode != "RGBA":
        return region.convert("RGB")
    white = Image.new("RGB", region.size, (255, 255, 255))
    white.paste(region, mask=region.getchannel("A"))
    return white
