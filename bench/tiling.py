"""Tiling speed, tile-read efficiency and memory of ``tile_slide`` on a large real-tissue slide.

Builds a pyramidal JPEG-tiled TIFF of at least 40,000 x 40,000 px by repeating (with mirror
flips, so seams are continuous) a 2048 px block of real tissue from ``CMU-1-Small-Region.svs``,
written tile by tile from a generator (bounded memory), plus one 4x smaller (half the side).
Then, side by side in one run:

1. the seed's method against our ``tile_slide`` rule body on the same slide and settings, in
   two figures, each side in a fresh subprocess timed from after ``import fast``, and both
   warmed alike (one untimed run of each on the small slide first: pyFAST's OpenCL kernels and
   the page cache):

   - ``tiling``: seed = pyFAST ``PatchGenerator`` over a ``TissueSegmentation`` mask, every
     256 px level-0 patch written as a JPG file; ours = the tile table (level-0 coordinates)
     and the QC PNG, no pixels of tiles decoded;
   - ``tiles_to_pixels``: the same, then every tile decoded once as training needs it: seed =
     every JPG file read and decoded (PIL); ours = every tile of the table read from the slide
     with :class:`histodetect.slides.reader.SlideReader` (in a seeded random order, as the
     training loader reads).

   Both tile counts are printed; the run fails when they differ by more than 5% (or when the
   seed method was stopped by ``--seed-limit-s`` before finishing, so that its count is
   unknown);
2. tile reads for training/inference on a fixed random subset of the tissue tiles (256 px,
   level 0, aligned with the file's tiles): :class:`histodetect.slides.reader.SlideReader` versus
   decoding the same JPEG tiles' bytes (already in memory) with PIL/libjpeg-turbo alone; plain
   OpenSlide ``read_region`` and a packed HDF5 patch store (uint8, one chunk per tile) for
   comparison;
3. peak RSS (``VmHWM``) of the ``tile_slide`` subprocess on both slides.

Last line: ``tiling_speedup_vs_seed=<a> tiles_to_pixels_speedup_vs_seed=<b> read_efficiency=<c>
peak_rss_mb=<d>`` (``d``: the ``tile_slide`` process before it reads any tile).

    .venv/bin/python bench/tiling.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import tifffile
from PIL import Image

from histodetect.slides.reader import SlideReader, composite_on_white
from histodetect.testdata import path_or_exit

CMU = "slides/CMU-1-Small-Region.svs"  # a real file, from histodetect.testdata
MPP = 0.499
TILE = 256
BLOCK = 2048


# --- the large slide ------------------------------------------------------------------------


def tissue_block() -> np.ndarray:
    """A 2048 px square of the CMU slide, mirrored into a 4096 px seamless super-block."""
    with openslide.OpenSlide(str(path_or_exit(CMU))) as s:
        block = composite_on_white(s.read_region((100, 800), 0, (BLOCK, BLOCK)))
    top = np.concatenate([block, block[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def level_tiles(pattern: np.ndarray, width: int, height: int) -> Iterator[np.ndarray]:
    """Row-major 256 px tiles of a ``width`` x ``height`` image repeating ``pattern``."""
    ph, pw = pattern.shape[:2]
    for y in range(0, height, TILE):
        rows = (y + np.arange(TILE)) % ph
        band = pattern[rows]
        for x in range(0, width, TILE):
            yield np.ascontiguousarray(band[:, (x + np.arange(TILE)) % pw])


def write_slide(path: Path, side: int) -> None:
    """Pyramidal JPEG-tiled TIFF, ``side`` x ``side`` px at level 0, halved down to 1280 px."""
    pattern = tissue_block()
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        k, size = 0, side
        while size >= 1280:
            res = 1e4 / MPP / 2**k
            tw.write(
                level_tiles(pattern, size, size),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
                description=f"bench slide {side} px" if k == 0 else None,
                metadata=None,
                maxworkers=2,
            )
            k, size = k + 1, size // 2
            pattern = np.asarray(Image.fromarray(pattern).reduce(2))


# --- 1. seed method vs tile_slide (subprocesses) ------------------------------------------

SEED_SCRIPT = r"""
import glob, json, os, sys, time
os.environ["FAST_DISABLE_LOGGING"] = "1"
import numpy as np
from PIL import Image
import fast
path, out, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
start = time.perf_counter()
importer = fast.WholeSlideImageImporter.create(path)
tissue = fast.TissueSegmentation.create(useColorThresholdingMethod=True, threshold=85)
tissue.connect(importer)
gen = fast.PatchGenerator.create(256, 256, level=0).connect(0, importer).connect(1, tissue)
n, stopped = 0, False
for patch in fast.DataStream(gen):
    Image.fromarray(np.asarray(patch)[..., :3]).save(f"{out}/{n}.jpg", quality=90)
    n += 1
    if time.perf_counter() - start > limit:
        stopped = True
        break
tiling_s = time.perf_counter() - start
t0 = time.perf_counter()
for name in glob.glob(f"{out}/*.jpg"):
    with Image.open(name) as im:
        np.asarray(im.convert("RGB"))
print(json.dumps({"tiles": n, "seconds": tiling_s, "decode_s": time.perf_counter() - t0,
                  "stopped": stopped}))
"""

OURS_SCRIPT = r"""
import json, os, sys, time
os.environ["FAST_DISABLE_LOGGING"] = "1"
from pathlib import Path
import numpy as np
import fast  # imported before the clock starts, as in the seed script
from histodetect.slides.qc import tiling_qc_png
from histodetect.slides.reader import SlideReader
from histodetect.slides.tiling import TilingSettings, qc_view, tile_slide
from histodetect.slides.tissue import TissueSettings
path, out = sys.argv[1], sys.argv[2]
start = time.perf_counter()
settings = TilingSettings(tile_um=256 * 0.499, target_mpp=0.499, min_tissue=0.5,
                          tissue=TissueSettings(method="fast", threshold=85))
res = tile_slide(path, "bench", settings)
thumb, thumb_ds, mask = qc_view(res)
tiling_qc_png(thumb, thumb_ds, mask, res.tiles, f"{out}/qc.png", "bench")
res.tiles.to_parquet(f"{out}/{Path(path).stem}.parquet", index=False)
tiling_s = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss can carry the parent's over fork and exec)
rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
t0 = time.perf_counter()
tiles = res.tiles.iloc[np.random.default_rng(0).permutation(len(res.tiles))]
with SlideReader(path) as reader:
    for x, y, level, read_px, tile_px in tiles[["x", "y", "level", "read_px", "tile_px"]].itertuples(index=False):
        reader.read_tile(int(x), int(y), int(level), int(read_px), int(tile_px))
print(json.dumps({"tiles": len(res.tiles), "seconds": tiling_s,
                  "decode_s": time.perf_counter() - t0,
                  "level": int(res.tiles.level.iloc[0]), "read_px": int(res.tiles.read_px.iloc[0]),
                  "maxrss_mb": rss}))
"""


def run_json(script: str, *args: str, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- 2. tile reads --------------------------------------------------------------------------


def raw_jpegs(path: Path, xy: np.ndarray) -> list[bytes]:
    """Complete JPEG streams (tables merged) of the level-0 file tiles at ``xy``."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        tables = page.jpegtables
        out = []
        with open(path, "rb") as fh:
            for x, y in xy:
                i = (y // page.tilelength) * across + x // page.tilewidth
                fh.seek(page.dataoffsets[i])
                data = fh.read(page.databytecounts[i])
                out.append(tables[:-2] + data[2:] if tables else data)
    return out


def timed(fn: object, n: int) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return n * TILE * TILE / 1e6 / (time.perf_counter() - start)


def read_benchmark(path: Path, tiles: pd.DataFrame, n: int, workdir: Path) -> dict[str, float]:
    """MP/s of each way of getting the same ``n`` random tissue tiles as RGB arrays."""
    sample = tiles.sample(n=min(n, len(tiles)), random_state=0)
    xy = sample[["x", "y"]].to_numpy()
    jpegs = raw_jpegs(path, xy)
    reader = SlideReader(path)
    slide = openslide.OpenSlide(str(path))

    def ours() -> None:
        for x, y in xy:
            reader.read_tile(int(x), int(y), 0, TILE, TILE)

    def pil() -> None:
        for b in jpegs:
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

    def imagecodecs_alone() -> None:
        for b in jpegs:
            jpeg8_decode(b)

    def plain_openslide() -> None:
        for x, y in xy:
            composite_on_white(slide.read_region((int(x), int(y)), 0, (TILE, TILE)))

    import h5py
    from imagecodecs import jpeg8_decode

    store = workdir / "store.h5"
    with h5py.File(store, "w") as f:
        ds = f.create_dataset(
            "patches", (len(xy), TILE, TILE, 3), np.uint8, chunks=(1, TILE, TILE, 3)
        )
        for i, (x, y) in enumerate(xy):
            ds[i] = reader.read_tile(int(x), int(y), 0, TILE, TILE)
    order = np.random.default_rng(1).permutation(len(xy))

    def hdf5() -> None:
        with h5py.File(store, "r") as f:
            ds = f["patches"]
            for i in order:
                ds[i]

    check = reader.read_tile(int(xy[0][0]), int(xy[0][1]), 0, TILE, TILE).astype(int)
    ref = np.asarray(Image.open(io.BytesIO(jpegs[0])).convert("RGB")).astype(int)
    assert np.abs(check - ref).max() <= 2, "reader and PIL disagree on the pixels"
    for fn in (ours, pil):  # warm the page cache and the decoders
        fn()
    result = {
        "ours": timed(ours, len(xy)),
        "pil": timed(pil, len(xy)),
        "openslide": timed(plain_openslide, len(xy)),
        "imagecodecs": timed(imagecodecs_alone, len(xy)),
        "hdf5_uint8": timed(hdf5, len(xy)),
        "ours_again": timed(ours, len(xy)),
        "pil_again": timed(pil, len(xy)),
        "jpeg_kb_per_tile": float(np.mean([len(b) for b in jpegs]) / 1024),
        "hdf5_kb_per_tile": store.stat().st_size / len(xy) / 1024,
        "tiles": float(len(xy)),
    }
    reader.close()
    slide.close()
    return result


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=40960, help="level-0 side of the big slide")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect_bench_tiling"))
    parser.add_argument("--read-tiles", type=int, default=2000)
    parser.add_argument("--seed-limit-s", type=float, default=240.0)
    args = parser.parse_args()
    if args.side % (TILE * 32):
        parser.error(f"--side must be a multiple of {TILE * 32}")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    big, small = work / f"big_{args.side}.tiff", work / f"small_{args.side // 2}.tiff"
    for path, side in ((big, args.side), (small, args.side // 2)):
        if not path.exists():
            t = time.perf_counter()
            write_slide(path, side)
            print(f"wrote {path} ({side} x {side} px, {path.stat().st_size / 2**20:.0f} MiB) "
                  f"in {time.perf_counter() - t:.0f} s")  # fmt: skip

    # 1. seed method vs ours: warmed alike, then timed, each run in a fresh process
    ours_out, seed_out = work / "ours", work / "seed_patches"
    ours_out.mkdir(exist_ok=True)

    def seed_run(path: Path) -> dict:
        shutil.rmtree(seed_out, ignore_errors=True)
        seed_out.mkdir()
        try:
            return run_json(
                SEED_SCRIPT, str(path), str(seed_out), str(args.seed_limit_s), timeout=3600
            )
        finally:
            shutil.rmtree(seed_out, ignore_errors=True)

    run_json(OURS_SCRIPT, str(small), str(ours_out), timeout=600)  # warm-up, untimed
    seed_run(small)  # warm-up, untimed
    ours = run_json(OURS_SCRIPT, str(big), str(ours_out), timeout=600)
    seed = seed_run(big)
    ours_small = run_json(OURS_SCRIPT, str(small), str(ours_out), timeout=600)
    tiles = pd.read_parquet(ours_out / f"{big.stem}.parquet")
    print(f"[1] slide {args.side} x {args.side} px, 256 px tiles at level 0 ({MPP} um/px)")
    print(f"    tiles: seed {seed['tiles']}, ours {ours['tiles']}")
    if seed["stopped"]:
        sys.exit(f"the seed method was stopped after {args.seed_limit_s} s and {seed['tiles']} "
                 "patches: its tile count is unknown; raise --seed-limit-s")  # fmt: skip
    gap = abs(seed["tiles"] - ours["tiles"]) / max(seed["tiles"], ours["tiles"])
    if gap > 0.05:
        sys.exit(f"tile counts differ by {gap:.1%} (> 5%): the two sides do not tile alike")
    speedup = seed["seconds"] / ours["seconds"]
    seed_px, ours_px = seed["seconds"] + seed["decode_s"], ours["seconds"] + ours["decode_s"]
    px_speedup = seed_px / ours_px
    print(f"    tiling: seed PatchGenerator + JPG files {seed['seconds']:.1f} s; "
          f"ours tile table + QC PNG {ours['seconds']:.1f} s: {speedup:.1f}x")  # fmt: skip
    print(f"    tiles to pixels: seed + decode every JPG {seed_px:.1f} s "
          f"({seed['decode_s']:.1f} s decoding); ours + read every tile from the slide "
          f"{ours_px:.1f} s ({ours['decode_s']:.1f} s reading): {px_speedup:.1f}x")  # fmt: skip

    # 2. reads
    reads = read_benchmark(big, tiles, args.read_tiles, work)
    efficiency = reads["ours_again"] / reads["pil_again"]
    print(f"[2] {int(reads['tiles'])} random 256 px tissue tiles of the big slide, one core, MP/s:")
    print(f"    ours SlideReader {reads['ours']:.1f} / {reads['ours_again']:.1f}; "
          f"PIL decode of the same JPEG bytes {reads['pil']:.1f} / {reads['pil_again']:.1f}; "
          f"imagecodecs.jpeg8_decode alone {reads['imagecodecs']:.1f}; "
          f"plain openslide read_region {reads['openslide']:.1f} "
          f"({reads['openslide'] / reads['pil_again']:.2f} of PIL); "
          f"HDF5 uint8 patch store {reads['hdf5_uint8']:.1f} "
          f"({reads['hdf5_uint8'] / reads['ours_again']:.1f}x ours, "
          f"{reads['hdf5_kb_per_tile']:.0f} KiB/tile vs {reads['jpeg_kb_per_tile']:.0f} KiB "
          f"JPEG in the slide)")  # fmt: skip
    print(f"    read efficiency (ours / PIL) {efficiency:.2f}")

    # 3. memory
    print(f"[3] peak RSS of tile_slide: {ours['maxrss_mb']:.0f} MB on {args.side} px, "
          f"{ours_small['maxrss_mb']:.0f} MB on {args.side // 2} px (4x fewer pixels); "
          f"ratio {ours['maxrss_mb'] / ours_small['maxrss_mb']:.2f}; what grows is the "
          f"{args.side * MPP / 8000:.0f} mm slide's 8 um/px thumbnail and tissue mask, not the "
          f"tiles read")  # fmt: skip
    print(
        f"tiling_speedup_vs_seed={speedup:.1f} tiles_to_pixels_speedup_vs_seed={px_speedup:.1f} "
        f"read_efficiency={efficiency:.2f} peak_rss_mb={ours['maxrss_mb']:.0f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("FAST_DISABLE_LOGGING", "1")
    main()
