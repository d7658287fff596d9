"""Reading RGB pixels from slides: OpenSlide, plus a direct JPEG-tile path and a DICOM colour fix.

:class:`SlideReader` is the one place tiles are read. Two things make it differ from plain
OpenSlide ``read_region``:

- TIFF-based slides (generic tiled TIFF, Aperio SVS) whose pyramid levels are JPEG-tiled: a
  request inside the level is served by reading the bytes of the file tiles it covers and
  decoding them with libjpeg-turbo (tifffile / imagecodecs), skipping OpenSlide's compositing.
  A request that cuts file tiles (256 px reads of 240 px SVS tiles) keeps the tiles it decoded
  in a small cache (:data:`DECODED_CACHE_BYTES`), so neighbours in raster order decode each
  file tile once. Any other request (other codecs, past the edge) falls back to OpenSlide.
- DICOM slides whose JPEG frames hold YCbCr samples (JFIF streams, chroma subsampled) while the
  header says ``PhotometricInterpretation`` RGB: OpenSlide trusts the header and returns the raw
  YCbCr samples as RGB (glass comes out about (243, 127, 128)). The frames are checked once and,
  when libjpeg's own reading of the stream is YCbCr, the samples are converted to RGB.
- Plain images (JPEG, PNG, non-tiled TIFF; see :func:`~histodetect.slides.slide.open_slide`)
  are decoded once and every region is a slice of that array.

:meth:`SlideReader.read_tiles` reads a batch of tiles on a pool of threads
(:mod:`histodetect.slides.threads`): the file tiles the batch needs are decoded once each, in
parallel, then cut into the batch's tiles; the pixels are :meth:`SlideReader.read_tile`'s.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import openslide
from PIL import Image

from histodetect.slides.slide import is_plain_image, open_slide
from histodetect.slides.threads import map_on_threads

JPEG_COMPRESSION = 7
DICOM_JPEG_BASELINE = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
DECODED_CACHE_BYTES = 32 << 20
"""Decoded file tiles kept for requests that cut tiles (OpenSlide's default cache size)."""


@dataclass(frozen=True)
class _TiledLevel:
    """A JPEG-tiled TIFF page that holds one OpenSlide level."""

    page: Any  # tifffile.TiffPage
    offsets: np.ndarray
    counts: np.ndarray
    tile_w: int
    tile_h: int
    width: int
    height: int
    downsample: int

    @property
    def across(self) -> int:
        return -(-self.width // self.tile_w)


@dataclass(frozen=True)
class _Window:
    """A request inside a direct level: ``w`` x ``h`` px from ``(lx, ly)`` in level px."""

    level: int
    info: _TiledLevel
    lx: int
    ly: int
    w: int
    h: int

    @property
    def cuts_tiles(self) -> bool:
        """Whether the window cuts file tiles (its neighbours will want the rest of them)."""
        tw, th = self.info.tile_w, self.info.tile_h
        return bool(self.lx % tw or self.ly % th or self.w % tw or self.h % th)

    def _rows_cols(self) -> tuple[range, range]:
        tw, th = self.info.tile_w, self.info.tile_h
        rows = range(self.ly // th, (self.ly + self.h - 1) // th + 1)
        return rows, range(self.lx // tw, (self.lx + self.w - 1) // tw + 1)

    def file_tiles(self) -> list[int]:
        """Indices of the file tiles the window covers."""
        rows, cols = self._rows_cols()
        return [r * self.info.across + c for r in rows for c in cols]

    def stitch(self, tile_at: Callable[[int], np.ndarray | None]) -> np.ndarray | None:
        """The window's pixels from its file tiles (None when one of them was never written)."""
        info, lx, ly, w, h = self.info, self.lx, self.ly, self.w, self.h
        tw, th = info.tile_w, info.tile_h
        if (lx % tw, ly % th, w, h) == (0, 0, tw, th):  # one whole file tile
            tile = tile_at((ly // th) * info.across + lx // tw)
            return None if tile is None else np.ascontiguousarray(tile)
        out = np.empty((h, w, 3), np.uint8)
        rows, cols = self._rows_cols()
        for r in rows:
            ya, yb = max(ly, r * th), min(ly + h, (r + 1) * th)
            for c in cols:
                xa, xb = max(lx, c * tw), min(lx + w, (c + 1) * tw)
                tile = tile_at(r * info.across + c)
                if tile is None:
                    return None
                out[ya - ly : yb - ly, xa - lx : xb - lx] = tile[
                    ya - r * th : yb - r * th, xa - c * tw : xb - c * tw
                ]
        return out


class SlideReader:
    """RGB regions of one slide, as uint8 ``(h, w, 3)`` arrays composited on white.

    Args:
        path: Slide file (anything OpenSlide opens; for DICOM, one ``.dcm`` of the series).
        direct: Use the direct JPEG-tile path when possible (``False``: always OpenSlide).
        cache_bytes: Size of OpenSlide's tile cache and of the direct path's cache of decoded
            tiles (None: 32 MiB each, OpenSlide's default). A single pass over a level (a
            thumbnail) gains nothing from a large one.
        threads: Threads that decode the file tiles of one :meth:`read_region` on the direct
            path (a thumbnail's strips, a large region); tiles read one by one never gain.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        direct: bool = True,
        cache_bytes: int | None = None,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.slide = open_slide(self.path)
        self._pixels: np.ndarray | None = None
        if is_plain_image(self.slide):
            self._pixels = composite_on_white(self.slide.read_region((0, 0), 0, self.dimensions))
        elif cache_bytes is not None:
            self.slide.set_cache(openslide.OpenSlideCache(cache_bytes))
        self.ycbcr_fix = dicom_frames_are_ycbcr(self.path, self.slide.properties)
        self._levels: dict[int, _TiledLevel] = {}
        self._decoded: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._decoded_bytes = 0
        self._decoded_limit = DECODED_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._tiff: Any = None
        self._fd = -1
        if direct and self._pixels is None:
            self._open_tiff()

    # --- OpenSlide pass-through ------------------------------------------------------------

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.slide.dimensions

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.slide.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.slide.level_downsamples

    @property
    def properties(self) -> Any:
        return self.slide.properties

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self.slide.get_best_level_for_downsample(downsample)

    @property
    def direct_levels(self) -> tuple[int, ...]:
        """Levels served by the direct JPEG-tile path (when aligned)."""
        return tuple(sorted(self._levels))

    # --- reading ----------------------------------------------------------------------------

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Pixels of ``size`` (w, h) at ``level`` whose top-left is ``location`` in level-0 px."""
        if self._pixels is not None and level == 0:
            return plain_region(self._pixels, location, size)
        direct = self._read_direct(location, level, size)
        if direct is not None:
            return direct
        return self._read_openslide(location, level, size)

    def read_tile(self, x: int, y: int, level: int, read_px: int, tile_px: int) -> np.ndarray:
        """A square tile: ``read_px`` px at ``level`` from level-0 ``(x, y)``, resized to ``tile_px``."""
        return resize_tile(self.read_region((x, y), level, (read_px, read_px)), tile_px)

    def read_tiles(
        self, locations: Iterable[Sequence[int]], *, threads: int = 1
    ) -> list[np.ndarray]:
        """Many tiles at once: :meth:`read_tile` of each ``(x, y, level, read_px, tile_px)``.

        The same pixels as :meth:`read_tile`, read on ``threads`` threads (see
        :mod:`histodetect.slides.threads`). On the direct JPEG-tile path every file tile the
        batch needs is decoded once, even when several tiles share it (or taken from the cache
        of decoded tiles), the decoding spread over the threads; then each tile is cut out and
        resized on them. Other reads (OpenSlide, plain images) run one per thread. The file
        tiles of one batch are held until it is done (about the batch's own size).
        """
        tiles = [tuple(int(v) for v in loc) for loc in locations]
        if self._pixels is not None:
            return map_on_threads(lambda t: self.read_tile(*t), tiles, threads)
        windows = [self._direct_window((t[0], t[1]), t[2], (t[3], t[3])) for t in tiles]
        decoded = self._decode_all([w for w in windows if w is not None], threads)

        def read(i: int) -> np.ndarray:
            x, y, level, read_px, tile_px = tiles[i]
            window = windows[i]
            rgb = None
            if window is not None:
                rgb = window.stitch(lambda index: decoded[(level, index)])
            if rgb is None:  # not direct, or a file tile that was never written
                rgb = self._read_openslide((x, y), level, (read_px, read_px))
            return resize_tile(rgb, tile_px)

        return map_on_threads(read, range(len(tiles)), threads)

    def _decode_all(
        self, windows: Sequence[_Window], threads: int
    ) -> dict[tuple[int, int], np.ndarray | None]:
        """Every file tile the windows cover, by ``(level, index)``: taken from the cache of
        decoded tiles or decoded once each on ``threads`` threads (and then cached)."""
        needed = {(w.level, index): w.info for w in windows for index in w.file_tiles()}
        decoded = {key: self._decoded[key] for key in needed if key in self._decoded}
        missing = [key for key in needed if key not in decoded]
        for key, tile in zip(
            missing,
            map_on_threads(lambda k: self._decode(needed[k], k[1]), missing, threads),
            strict=True,
        ):
            decoded[key] = tile
            if tile is not None:
                self._remember(key, tile)
        return decoded

    def _read_openslide(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        region = self.slide.read_region(location, level, size)
        return composite_on_white(region, ycbcr=self.ycbcr_fix)

    def _direct_window(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> _Window | None:
        """The part of a direct level a request covers (None: the direct path cannot serve it)."""
        info = self._levels.get(level)
        if info is None:
            return None
        ds = info.downsample
        x0, y0 = location
        if x0 % ds or y0 % ds:
            return None
        lx, ly, (w, h) = x0 // ds, y0 // ds, size
        if w <= 0 or h <= 0 or lx < 0 or ly < 0 or lx + w > info.width or ly + h > info.height:
            return None
        return _Window(level, info, lx, ly, w, h)

    def _read_direct(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray | None:
        window = self._direct_window(location, level, size)
        if window is None:
            return None
        info = window.info
        if self.threads > 1:  # one file tile decodes in place (map_on_threads)
            decoded = self._decode_all([window], self.threads)
            return window.stitch(lambda index: decoded[(level, index)])
        if window.cuts_tiles:
            return window.stitch(lambda index: self._cached(level, info, index))
        return window.stitch(lambda index: self._decode(info, index))

    def _decode(self, info: _TiledLevel, index: int) -> np.ndarray | None:
        """RGB pixels of file tile ``index`` (full tile size; None for a tile not written)."""
        count = int(info.counts[index])
        if count == 0:
            return None
        data = os.pread(self._fd, count, int(info.offsets[index]))
        tile = info.page.decode(data, index, jpegtables=info.page.jpegtables)[0]
        return tile.reshape(info.tile_h, info.tile_w, -1)[..., :3]

    def _cached(self, level: int, info: _TiledLevel, index: int) -> np.ndarray | None:
        """:meth:`_decode` through a least-recently-used cache of decoded tiles."""
        key = (level, index)
        tile = self._decoded.get(key)
        if tile is not None:
            self._decoded.move_to_end(key)
            return tile
        tile = self._decode(info, index)
        if tile is not None:
            self._remember(key, tile)
        return tile

    def _remember(self, key: tuple[int, int], tile: np.ndarray) -> None:
        """Keep a decoded file tile in the cache, dropping the least recently used ones."""
        self._decoded[key] = tile
        self._decoded_bytes += tile.nbytes
        while self._decoded_bytes > self._decoded_limit and len(self._decoded) > 1:
            self._decoded_bytes -= self._decoded.popitem(last=False)[1].nbytes

    def _open_tiff(self) -> None:
        import tifffile

        try:
            tif = tifffile.TiffFile(self.path)
        except Exception:  # not a TIFF (DICOM, ...): OpenSlide only
            return
        pages = {}
        for series in tif.series:
            for lvl in series.levels:
                page = lvl.keyframe
                if _is_rgb_jpeg_tiled(page):
                    pages.setdefault((page.imagewidth, page.imagelength), page)
        for i, (w, h) in enumerate(self.slide.level_dimensions):
            page = pages.get((w, h))
            ds = self.slide.level_downsamples[i]
            if page is None or abs(ds - round(ds)) > 1e-9:
                continue
            self._levels[i] = _TiledLevel(
                page,
                np.asarray(page.dataoffsets, np.int64),
                np.asarray(page.databytecounts, np.int64),
                int(page.tilewidth),
                int(page.tilelength),
                int(w),
                int(h),
                round(ds),
            )
        if self._levels:
            self._tiff = tif
            self._fd = os.open(self.path, os.O_RDONLY)
        else:
            tif.close()

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file handles."""
        self.slide.close()
        if self._tiff is not None:
            self._tiff.close()
            os.close(self._fd)
            self._tiff, self._fd, self._levels = None, -1, {}
        self._decoded.clear()
        self._decoded_bytes = 0

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("SlideReader holds open files; open one per process instead")


def resize_tile(rgb: np.ndarray, tile_px: int) -> np.ndarray:
    """A square read resized to ``tile_px`` (box filter down, bilinear up; as is when equal)."""
    read_px = rgb.shape[0]
    if read_px == tile_px:
        return rgb
    resample = Image.Resampling.BOX if read_px > tile_px else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(rgb).resize((tile_px, tile_px), resample))


def plain_region(
    pixels: np.ndarray, location: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """A ``size`` (w, h) window of a whole image at ``location``; white where it leaves the image."""
    (x, y), (w, h) = location, size
    ih, iw = pixels.shape[:2]
    if min(x, y) >= 0 and x + w <= iw and y + h <= ih:
        return pixels[y : y + h, x : x + w].copy()
    out = np.full((h, w, 3), 255, np.uint8)
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
    if x1 < x2 and y1 < y2:
        out[y1 - y : y2 - y, x1 - x : x2 - x] = pixels[y1:y2, x1:x2]
    return out


def _is_rgb_jpeg_tiled(page: Any) -> bool:
    return (
        bool(page.is_tiled)
        and page.compression == JPEG_COMPRESSION
        and page.samplesperpixel in (3, 4)
        and page.bitspersample == 8
        and page.planarconfig == 1
        and page.imagedepth == 1
        and page.tiledepth == 1
    )


def composite_on_white(region: Image.Image, *, ycbcr: bool = False) -> np.ndarray:
    """RGB array of an OpenSlide RGBA region on white (transparent = outside the scan).

    With ``ycbcr`` the colour samples are YCbCr (see :func:`dicom_frames_are_ycbcr`) and are
    converted to RGB first.
    """
    if region.mode == "RGBA":
        alpha = region.getchannel("A")
        colour = region.convert("RGB")
    else:
        alpha, colour = None, region.convert("RGB")
    if ycbcr:
        colour = Image.frombytes("YCbCr", colour.size, colour.tobytes()).convert("RGB")
    if alpha is None or alpha.getextrema() == (255, 255):
        return np.asarray(colour)
    white = Image.new("RGB", region.size, (255, 255, 255))
    white.paste(colour, mask=alpha)
    return np.asarray(white)


def dicom_frames_are_ycbcr(path: Path, properties: Any) -> bool:
    """Whether a DICOM slide labelled RGB stores its JPEG frames as YCbCr.

    True for baseline-JPEG DICOM with ``PhotometricInterpretation`` RGB whose first frame libjpeg
    itself would read as YCbCr (a JFIF stream, no Adobe marker saying RGB, component ids not
    'R', 'G', 'B'). OpenSlide decodes such frames as RGB, leaving the samples in YCbCr.
    """
    if properties.get("openslide.vendor") != "dicom":
        return False
    if properties.get("dicom.PhotometricInterpretation") != "RGB":
        return False
    if properties.get("dicom.TransferSyntaxUID") not in DICOM_JPEG_BASELINE:
        return False
    return jpeg_stream_is_ycbcr(first_dicom_frame(path))


def first_dicom_frame(path: Path) -> bytes:
    """The first encapsulated frame of a DICOM file, read without loading the others."""
    import pydicom
    from pydicom import encaps

    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        f.seek(12, os.SEEK_CUR)  # (7FE0,0010) tag, VR OB, reserved, undefined length
        return encaps.get_frame(f, 0, number_of_frames=int(ds.get("NumberOfFrames", 1)))


def jpeg_stream_is_ycbcr(data: bytes) -> bool:
    """libjpeg's guess of a 3-component JPEG's colour space: True for YCbCr, False for RGB."""
    i, jfif, adobe_transform, ids = 2, False, None, b""
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        body = data[i + 4 : i + 2 + length]
        if marker == 0xE0 and body.startswith(b"JFIF\x00"):
            jfif = True
        elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe_transform = body[11]
        elif marker in (0xC0, 0xC1, 0xC2) and len(body) >= 6:
            ids = bytes(body[6 + 3 * k] for k in range(body[5]) if 6 + 3 * k < len(body))
        elif marker == 0xDA:
            break
        i += 2 + length
    if jfif:
        return True
    if adobe_transform is not None:
        return adobe_transform != 0
    return ids != b"RGB"
