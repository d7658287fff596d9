"""Pyramidal TIFF writer: tiled, JPEG-compressed levels that OpenSlide opens as one slide."""

from __future__ import annotations

import os

import numpy as np
import tifffile

from histodetect.io import atomic_path


def _halve(a: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Downsample an ``(H, W, C)`` uint8 image by 2 (2x2 mean; odd edges replicated)."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    out = np.empty((a.shape[0] // 2, a.shape[1] // 2, a.shape[2]), np.uint8)
    for r0 in range(0, out.shape[0], chunk):
        rows = slice(2 * r0, 2 * (r0 + chunk))
        s = a[rows][0::2, 0::2].astype(np.uint16)
        s += a[rows][1::2, 0::2]
        s += a[rows][0::2, 1::2]
        s += a[rows][1::2, 1::2]
        s += 2
        s >>= 2
        out[r0 : r0 + chunk] = s
    return out


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    mpp: float,
    tile: int = 256,
    quality: int = 85,
    min_size: int = 512,
    description: str | None = None,
) -> int:
    """Write a tiled, JPEG-compressed pyramidal TIFF that OpenSlide opens as a multi-level slide.

    Each level is a top-level IFD (level 0 first, then halved until the smaller side is at most
    ``min_size``), tiled, JPEG in RGB photometric, with X/YResolution in pixels per centimetre
    so that OpenSlide reports ``openslide.mpp-x == mpp``.

    Args:
        path: Output file; written atomically.
        rgb: Level-0 image ``(H, W, 3)`` uint8.
        mpp: Microns per level-0 pixel.
        tile: Tile side in pixels (multiple of 16).
        quality: JPEG quality (1-100).
        min_size: Stop adding levels once the smaller side is at most this.
        description: ImageDescription of level 0 (a default is written if ``None``).

    Returns:
        Number of levels written.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    h, w = rgb.shape[:2]
    if description is None:
        description = f"histodetect synthetic slide; {w}x{h} px at {mpp} um/px"
    bigtiff = rgb.nbytes > 2**31
    workers = min(4, os.cpu_count() or 1)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
        level, k = rgb, 0
        while True:
            res = 1e4 / mpp / 2**k
            tw.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": int(quality)},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
                description=description if k == 0 else None,
                metadata=None,
                maxworkers=workers,
            )
            if min(level.shape[:2]) <= min_size:
                break
            level, k = _halve(level), k + 1
    return k + 1
