"""What runs inside a job's subprocess of ``bench/peers.py``: timed runs, peak memory, and the
reading jobs, the same 256 px level-0 tiles read by each tool.

Tools that read one tile at a time (OpenSlide, tiffslide, fastslide) are called per tile; the
batched readers get the whole list, in the same order, and their own thread pool of
``PEERS_THREADS`` (2): ours ``SlideReader.read_tiles`` in batches, cuCIM ``read_region`` with a list of locations (its CPU decoder),
hs2p's streams (in tiling order its supertile reads, neighbouring tiles grouped into one 2x2
to 8x8 region read; in random order its ``read_regions`` in batches, which keep the order),
and microtome-wsi's ``read_batch`` of the file's own tiles (an SVS reader: each 256 px tile is
cut from the stored tiles it covers, decoded in parallel). ``turbo`` is the bound: the slide's
own JPEG tiles decoded from bytes in memory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tiling import TILE, raw_jpegs

MIN_READS = 2000
"""Tiles read per tool and order, at least (in passes over a slide's tile list)."""
BATCH = 64
"""Tiles per call of a batched reader (a training batch)."""

REPEATS, REPEAT_BUDGET_S = 3, 100.0
"""Timed runs of a tiling or inference job, the median given: single runs varied by 25% (a
second's tiling) to 40% (a 30 s inference) between runs on the 2-core machine."""

Reads = Callable[[np.ndarray], Iterator[np.ndarray]]
"""Reads the tiles at rows ``(x, y)`` of an array, yielding each as an RGB array."""


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``), MB."""
    with open("/proc/self/status") as fh:
        line = next(row for row in fh if row.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def timed_job(run: Callable[[str], dict[str, Any]], warm: str, path: str) -> dict[str, Any]:
    """``run(warm)`` untimed, then ``run(path)`` timed :data:`REPEATS` times or until the timed
    runs took :data:`REPEAT_BUDGET_S`; the last result with the median seconds, the number of
    timed runs and peak RSS."""
    run(warm)
    times: list[float] = []
    while len(times) < REPEATS and sum(times) < REPEAT_BUDGET_S:
        start = time.perf_counter()
        out = run(path)
        times.append(time.perf_counter() - start)
    return {"seconds": float(np.median(times)), "runs": len(times), **out, "rss_mb": peak_rss_mb()}


def warm_slide() -> Path:
    return Path(os.environ["PEERS_WARM_SLIDE"])


def slide_mpp(path: str) -> float:
    """Level-0 um/px of a slide, as OpenSlide reads it."""
    import openslide

    with openslide.OpenSlide(path) as s:
        return float(s.properties[openslide.PROPERTY_NAME_MPP_X])


def threads() -> int:
    return int(os.environ.get("PEERS_THREADS", "2"))


def reader_for(tool: str, path: str) -> Callable[[int, int], np.ndarray]:
    """A function reading the 256 px level-0 tile at ``(x, y)`` as an RGB array, per tool."""
    if tool == "openslide":
        import openslide

        from histodetect.slides.reader import composite_on_white

        slide = openslide.OpenSlide(path)
        return lambda x, y: composite_on_white(slide.read_region((x, y), 0, (TILE, TILE)))
    if tool == "tiffslide":
        import tiffslide

        tslide = tiffslide.TiffSlide(path)
        return lambda x, y: tslide.read_region((x, y), 0, (TILE, TILE), as_array=True)[..., :3]
    if tool == "fastslide":
        import fastslide

        fslide = fastslide.FastSlide.from_file_path(path)
        return lambda x, y: fslide.read_region((x, y), 0, (TILE, TILE)).numpy()
    raise ValueError(tool)


def ours_reads(path: str) -> Reads:
    """Ours: ``SlideReader.read_tiles`` in batches, the file tiles under each batch decoded
    once each on ``PEERS_THREADS`` threads."""
    from histodetect.slides.reader import SlideReader

    reader = SlideReader(path)

    def reads(tiles: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(tiles), BATCH):
            chunk = [(int(x), int(y), 0, TILE, TILE) for x, y in tiles[start : start + BATCH]]
            yield from reader.read_tiles(chunk, threads=threads())

    return reads


def cucim_reads(path: str) -> Reads:
    """cuCIM's batched ``read_region`` over a list of locations (CPU decoding)."""
    from cucim import CuImage

    image = CuImage(path)

    def reads(tiles: np.ndarray) -> Iterator[np.ndarray]:
        locations = [(int(x), int(y)) for x, y in tiles]
        batches = image.read_region(locations, (TILE, TILE), 0, num_workers=threads(),
                                    batch_size=BATCH)  # fmt: skip
        for batch in batches:
            yield from np.asarray(batch)

    return reads


def microtome_reads(path: str) -> Reads:
    """microtome-wsi: per batch, the stored tiles under the tiles decoded in parallel
    (``read_batch``), each 256 px tile cut from them."""
    import microtome

    slide = microtome.open(path)
    level = slide.levels[0]
    tw, th, across = level["tile_width"], level["tile_height"], level["tiles_across"]
    width, height = level["width"], level["height"]

    def cells(x: int, y: int) -> Iterator[tuple[int, int]]:
        for cy in range(y // th, min(y + TILE - 1, height - 1) // th + 1):
            for cx in range(x // tw, min(x + TILE - 1, width - 1) // tw + 1):
                yield cx, cy

    def reads(tiles: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(tiles), BATCH):
            chunk = [(int(x), int(y)) for x, y in tiles[start : start + BATCH]]
            keys = sorted({c for x, y in chunk for c in cells(x, y)})
            decoded = slide.read_batch(0, [cy * across + cx for cx, cy in keys], threads=threads())
            where = {key: i for i, key in enumerate(keys)}
            for x, y in chunk:
                out = np.full((TILE, TILE, 3), 255, np.uint8)  # past the slide's edge: white
                for cx, cy in cells(x, y):
                    x0, y0 = max(x, cx * tw), max(y, cy * th)
                    x1 = min(x + TILE, (cx + 1) * tw, width)
                    y1 = min(y + TILE, (cy + 1) * th, height)
                    part = decoded[where[cx, cy]]
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = part[
                        y0 - cy * th : y1 - cy * th, x0 - cx * tw : x1 - cx * tw
                    ]
                yield out

    return reads


def hs2p_result(path: str, tiles: np.ndarray) -> Any:
    """An hs2p tiling result of the slide at its own resolution (256 px tiles), its tiles
    replaced by ``tiles``: what hs2p's readers stream."""
    from hs2p import SegmentationConfig, SlideSpec, TilingConfig, tile_slide

    mpp = slide_mpp(path)
    spec = SlideSpec(sample_id="bench", image_path=Path(path), spacing_at_level_0=mpp)
    tiling = TilingConfig(requested_spacing_um=mpp, requested_tile_size_px=TILE, tolerance=0.05,
                          overlap=0.0)  # fmt: skip
    result = tile_slide(spec, tiling=tiling, segmentation=SegmentationConfig(method="hsv"))
    result.tiles = dataclasses.replace(
        result.tiles, x=tiles[:, 0], y=tiles[:, 1], tile_index=None,
        tissue_fractions=np.ones(len(tiles), np.float32),
    )  # fmt: skip
    if (result.read_level, result.read_tile_size_px, result.tile_size_lv0) != (0, TILE, TILE):
        raise RuntimeError("hs2p did not resolve 256 px level-0 tiles at the slide's mpp")
    return result


def hs2p_reads(path: str, order: str, result: Any) -> Reads:
    """hs2p: supertile reads of ``result``'s tiles in tiling order; ``read_regions`` in
    batches (order kept) in random order."""
    from hs2p.wsi.reader import open_slide
    from hs2p.wsi.streaming import iter_tile_arrays_from_result

    if order == "tiling":
        return lambda tiles: iter_tile_arrays_from_result(result=result, num_workers=threads())
    reader = open_slide(path, backend=str(result.backend), spacing_override=result.base_spacing_um)

    def reads(tiles: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(tiles), BATCH):
            chunk = [(int(x), int(y)) for x, y in tiles[start : start + BATCH]]
            yield from reader.read_regions(chunk, 0, (TILE, TILE), num_workers=threads())

    return reads


def open_reads(tool: str, path: str, order: str, state: dict[str, Any]) -> Reads:
    """A fresh reader of ``tool`` (``state`` keeps what a tool sets up once per job)."""
    if tool == "ours":
        return ours_reads(path)
    if tool == "cuCIM":
        return cucim_reads(path)
    if tool == "microtome":
        return microtome_reads(path)
    if tool == "hs2p":
        return hs2p_reads(path, order, state["hs2p"])
    read = reader_for(tool, path)
    return lambda tiles: (read(int(x), int(y)) for x, y in tiles)


def read_job(tool: str, path: str, tiles_file: Path, order: str) -> dict[str, Any]:
    """Every tile of ``tiles_file`` read in ``order``, in passes of a fresh reader each.

    Each pass opens its own reader (not timed), so no tool's tile cache carries over from the
    warm-up or from the pass before; passes repeat until at least :data:`MIN_READS` tiles are
    read (a small slide has few tissue tiles). One untimed pass warms the decoders and the
    page cache. ``tiles`` is what the tool gave back in one pass (each tile counted once).
    """
    tiles = pd.read_parquet(tiles_file)[["x", "y"]].to_numpy()
    if tool == "turbo":
        return turbo_job(path, tiles)
    if order == "random":
        tiles = tiles[np.random.default_rng(0).permutation(len(tiles))]
    state = {"hs2p": hs2p_result(path, tiles)} if tool == "hs2p" else {}
    passes = -(-MIN_READS // len(tiles))
    seconds, check, given = 0.0, 0, 0
    for k in range(passes + 1):
        reads = open_reads(tool, path, order, state)
        start = time.perf_counter()
        count = 0
        for tile in reads(tiles):
            check += int(tile[128, 128, 1])
            count += 1
        if k:  # pass 0 is the warm-up
            seconds += time.perf_counter() - start
        given = count
        del reads
    n = passes * given
    return {"seconds": seconds, "tiles": given, "passes": passes,
            "mp": n * TILE * TILE / 1e6, "rss_mb": peak_rss_mb(), "check": check}  # fmt: skip


def turbo_job(path: str, tiles: np.ndarray) -> dict[str, Any]:
    """libjpeg-turbo alone on the slide's own level-0 JPEG tiles under ``tiles`` (bytes in
    memory), in passes as :func:`read_job`; MP/s of the file tiles' pixels decoded."""
    import tifffile
    from imagecodecs import jpeg8_decode

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tw, th = page.tilewidth, page.tilelength
    cells = {(cx, cy) for x, y in tiles
             for cx in range(x // tw, (x + TILE - 1) // tw + 1)
             for cy in range(y // th, (y + TILE - 1) // th + 1)}  # fmt: skip
    jpegs = raw_jpegs(Path(path), np.array(sorted(cells)) * (tw, th))
    passes = -(-MIN_READS // len(jpegs))
    for b in jpegs:  # warm-up
        jpeg8_decode(b)
    start = time.perf_counter()
    for _ in range(passes):
        for b in jpegs:
            jpeg8_decode(b)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tiles": len(jpegs), "passes": passes,
            "mp": passes * len(jpegs) * tw * th / 1e6, "rss_mb": peak_rss_mb(),
            "file_tile": f"{tw}x{th}"}  # fmt: skip
