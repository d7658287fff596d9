"""Tissue masks on a thumbnail: pyFAST ``TissueSegmentation`` or Otsu thresholding."""

from __future__ import annotations

import fcntl
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage

FAST_BLOCK_PX = 3072
"""Side of the thumbnail blocks pyFAST segments one at a time (bounds its memory: about 30 MB
of RGB per block; at 8 um/px a slide up to 24 mm across is one block)."""


@dataclass(frozen=True)
class TissueSettings:
    """How to find tissue. ``method`` is ``"fast"`` (pyFAST colour threshold) or ``"otsu"``."""

    method: str = "fast"
    mpp: float = 8.0
    """Resolution of the thumbnail the mask is computed on, um/px."""
    threshold: int = 85
    """pyFAST: minimum colour distance from white (0-255) for a pixel to be tissue."""
    dilation_um: float = 24.0
    erosion_um: float = 24.0
    min_region_um2: float = 20000.0
    """Connected tissue pieces smaller than this are dropped (dust, pen dots)."""
    min_saturation: int = 15
    """Pixels whose chroma (max - min of R, G, B; 0-255) is below this count as glass before
    thresholding: stained tissue is coloured, while slide edges, scanner borders, fiducial
    crosses and black ink are grey. 0 turns the filter off."""


def tissue_mask(thumb: np.ndarray, settings: TissueSettings) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail taken at ``settings.mpp`` um/px."""
    if settings.min_saturation > 0:
        thumb = whiten_grey(thumb, settings.min_saturation)
    if settings.method == "fast":
        mask = _fast_mask(thumb, settings)
    elif settings.method == "otsu":
        mask = _otsu_mask(thumb, settings)
    else:
        raise ValueError(f"unknown tissue method {settings.method!r}; use 'fast' or 'otsu'")
    return _drop_small(mask, settings)


def whiten_grey(thumb: np.ndarray, min_saturation: int) -> np.ndarray:
    """Copy of ``thumb`` with pixels of chroma below ``min_saturation`` set to white.

    Chroma is max - min of R, G, B, made with Pillow's per-band operations (exact integer
    arithmetic on 8-bit planes, about 2.5x faster than the same in numpy).
    """
    img = Image.fromarray(np.ascontiguousarray(thumb[..., :3], dtype=np.uint8))
    r, g, b = img.split()
    high = ImageChops.lighter(ImageChops.lighter(r, g), b)
    low = ImageChops.darker(ImageChops.darker(r, g), b)
    grey = ImageChops.subtract(high, low).point(
        [255 if v < min_saturation else 0 for v in range(256)], mode="1"
    )
    img.paste((255, 255, 255), mask=grey)
    return np.array(img)


def _odd_px(um: float, mpp: float) -> int:
    """Side in px of a square structuring element ``um`` microns wide: odd, at least 1."""
    px = max(1, round(um / mpp))
    return px if px % 2 else px + 1


def fast_element_px(um: float, mpp: float) -> int:
    """pyFAST's structuring element size for ``um`` microns at ``mpp``: 0 (none) or odd >= 3.

    pyFAST's Dilation and Erosion refuse sizes below 3 and skip a size of 0. A one-pixel
    element changes nothing, so it is passed as 0: on a thumbnail coarser than the element
    (a slide at 20-30 um/px segmented at its own resolution) the morphology is left out.
    """
    px = _odd_px(um, mpp)
    return 0 if px == 1 else px


QUIET_FAST_ENV = {
    "FAST_DISABLE_SPLASH": "1",  # the banner printed on the first pyFAST call
    "FAST_DISABLE_PYTHON_INIT_ON_IMPORT": "1",  # no Qt/OpenGL start on import (nothing rendered)
    "FAST_DISABLE_LOGGING": "1",
    "QT_LOGGING_RULES": "default.warning=false",  # Qt's "XDG_RUNTIME_DIR not set" notice
}
"""Environment that keeps pyFAST and its Qt quiet; set (unless already set) before import."""


def import_fast() -> Any:
    """pyFAST, imported so that it writes nothing to the job's output.

    Without these settings every job that segments tissue prints FAST's banner and "Unable to
    open X display. Rendering is disabled." (a warning of FAST's reporter, on stdout). Its
    info and warning messages are switched off; its errors still reach us as exceptions.
    """
    for key, value in QUIET_FAST_ENV.items():
        os.environ.setdefault(key, value)
    import fast  # imported lazily: it loads Qt and OpenCL

    fast.Config.setVisualization(False)
    for kind in (fast.Reporter.INFO, fast.Reporter.WARNING):
        fast.Reporter.setGlobalReportMethod(kind, fast.Reporter.NONE)
    return fast


def _fast_mask(thumb: np.ndarray, s: TissueSettings, block_px: int = FAST_BLOCK_PX) -> np.ndarray:
    """pyFAST mask computed in overlapping blocks, so its memory does not grow with the slide.

    Thresholding, dilation and erosion are local, so blocks with a margin wider than the two
    structuring elements give the same mask as one pass over the whole thumbnail.
    """
    h, w = thumb.shape[:2]
    if max(h, w) <= block_px:
        return _fast_block(thumb, s)
    margin = _odd_px(s.dilation_um, s.mpp) + _odd_px(s.erosion_um, s.mpp) + 2
    out = np.zeros((h, w), bool)
    for y0 in range(0, h, block_px):
        for x0 in range(0, w, block_px):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(h, y0 + block_px + margin), min(w, x0 + block_px + margin)
            block = _fast_block(thumb[ya:yb, xa:xb], s)
            out[y0 : y0 + block_px, x0 : x0 + block_px] = block[
                y0 - ya : y0 - ya + block_px, x0 - xa : x0 - xa + block_px
            ]
    return out


@contextmanager
def _kernel_cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on pyFAST's OpenCL kernel cache while a segmentation runs.

    pyFAST compiles its kernels on first use (per set of build options, e.g. each dilation
    size) and writes the binaries to a cache shared by all processes; two parallel jobs that
    compile the same kernel race, and one reads a half-written file ("Error parsing OpenCL
    binary cache file"). Segmentations of concurrent jobs therefore run one at a time.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".histodetect.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fast_block(thumb: np.ndarray, s: TissueSettings) -> np.ndarray:
    fast = import_fast()
    cache_dir = Path(fast.Config.getKernelBinaryPath())
    with _kernel_cache_lock(cache_dir):
        try:
            return _fast_segment(fast, thumb, s)
        except RuntimeError as err:
            if "binary cache" not in str(err):
                raise
            # A job killed while writing the cache left a broken file: drop the cache
            # (it is only compiled kernels) and compile again.
            shutil.rmtree(cache_dir / "OpenCL", ignore_errors=True)
            return _fast_segment(fast, thumb, s)


def _fast_segment(fast: Any, thumb: np.ndarray, s: TissueSettings) -> np.ndarray:
    """pyFAST's colour threshold, then its closing (dilation, erosion) done on the host.

    pyFAST's Dilation and Erosion kernels (a disc of radius ``size // 2``) cost about a second
    each on a 2,560 px thumbnail on PoCL; :func:`fast_closing` gives the same mask, pixel for
    pixel (tested against pyFAST's own), in milliseconds.
    """
    mask = fast_threshold(fast, thumb, s.threshold, s.mpp)
    return fast_closing(
        mask, fast_element_px(s.dilation_um, s.mpp), fast_element_px(s.erosion_um, s.mpp)
    )


def fast_threshold(
    fast: Any, thumb: np.ndarray, threshold: int, mpp: float, dilation: int = 0, erosion: int = 0
) -> np.ndarray:
    """pyFAST ``TissueSegmentation`` (colour thresholding) of an RGB thumbnail, as a bool mask.

    ``dilation``/``erosion`` are passed to pyFAST as its structuring element sizes (0: none).
    """
    img = fast.Image.createFromArray(np.ascontiguousarray(thumb[..., :3], dtype=np.uint8))
    img.setSpacing([mpp / 1000.0, mpp / 1000.0, 1.0])
    seg = fast.TissueSegmentation.create(
        useColorThresholdingMethod=True,
        threshold=threshold,
        dilationSize=dilation,
        erosionSize=erosion,
    )
    seg.setInputData(img)
    out = np.asarray(seg.runAndGetOutputData())
    return out.reshape(out.shape[0], out.shape[1]) > 0


def fast_closing(mask: np.ndarray, dilation: int, erosion: int) -> np.ndarray:
    """pyFAST's closing of ``TissueSegmentation``: dilation, then erosion, by discs.

    Sizes are pyFAST's (0: skipped, else odd); each is a disc of radius ``size // 2``. The
    dilation sees nothing outside the image, the erosion sees tissue there (pyFAST clamps
    its reads to the edge, which for a disc is the same).
    """
    if dilation:
        mask = _disc_filter(mask, dilation // 2, fill=False)
    if erosion:
        mask = _disc_filter(mask, erosion // 2, fill=True)
    return mask


def _disc_filter(mask: np.ndarray, radius: int, fill: bool) -> np.ndarray:
    """OR (dilation, ``fill`` False) or AND (erosion, ``fill`` True) of ``mask`` over a disc.

    One horizontal run per row of the disc, each made by shifted copies that double in length;
    pixels beyond the image count as ``fill``.
    """
    h = mask.shape[0]
    mask = np.ascontiguousarray(mask, dtype=bool)
    combine = np.logical_and if fill else np.logical_or
    out = np.full(mask.shape, fill, bool)  # rows beyond the image are ``fill``: no change
    runs: dict[int, np.ndarray] = {}
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in runs:
            runs[half] = _row_runs(mask, half, fill, combine)
        lo, hi = max(0, -dy), min(h, h - dy)  # out[y] takes in runs[half][y + dy]
        combine(out[lo:hi], runs[half][lo + dy : hi + dy], out=out[lo:hi])
    return out


def _row_runs(mask: np.ndarray, half: int, fill: bool, combine: Any) -> np.ndarray:
    """``combine`` of each pixel's row neighbours within ``half`` px (beyond the edge: ``fill``)."""
    if half == 0:
        return mask
    length = 2 * half + 1
    acc = np.pad(mask, ((0, 0), (half, half)), constant_values=fill)
    span = 1  # acc[:, x] combines the padded row over [x, x + span)
    while 2 * span <= length:
        combine(acc[:, :-span], acc[:, span:], out=acc[:, :-span])
        span *= 2
    width = mask.shape[1]
    return combine(acc[:, :width], acc[:, length - span : length - span + width])


def _otsu_mask(thumb: np.ndarray, s: TissueSettings) -> np.ndarray:
    rgb = thumb[..., :3].astype(np.float32)
    # Saturation separates stained tissue from grey/white glass better than intensity.
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dark = 255.0 - rgb.mean(axis=2)
    score = np.maximum(sat, dark)
    mask = score > otsu_threshold(score)
    dil, ero = _odd_px(s.dilation_um, s.mpp), _odd_px(s.erosion_um, s.mpp)
    mask = ndimage.binary_dilation(mask, structure=np.ones((dil, dil), bool))
    mask = ndimage.binary_erosion(mask, structure=np.ones((ero, ero), bool), border_value=1)
    return ndimage.binary_fill_holes(mask)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of an array of values (between-class variance maximised)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def _drop_small(mask: np.ndarray, s: TissueSettings) -> np.ndarray:
    min_px = s.min_region_um2 / (s.mpp * s.mpp)
    if min_px <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    sizes = np.zeros(n + 1, np.int64)
    for y in range(0, labels.shape[0], 256):  # bands: bincount widens labels to int64
        sizes += np.bincount(labels[y : y + 256].ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes[1:] < min_px) + 1
    out = mask.copy()
    boxes = ndimage.find_objects(labels)
    for label in small:  # small pieces have small boxes: cleared in place
        box = boxes[label - 1]
        out[box][labels[box] == label] = False
    return out
