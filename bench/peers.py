"""Side by side with the libraries users pick instead: tiling, tile reading and inference.

On the 40,960 px JPEG-tiled TIFF of real tissue that ``bench/tiling.py`` makes (reused when it is
already in ``--workdir``) and on one real SVS (``CMU-1-Small-Region.svs`` through
``histodetect.testdata``, or ``--svs PATH``), one task at a time, each tool in a fresh
subprocess (peak RSS is that process's ``VmHWM``) with the same thread settings
(``--threads``, 2 by default: ``OMP_NUM_THREADS`` and friends, ``torch.set_num_threads``),
each tool warmed first by one untimed run of the same job on the SVS (lazy imports, page cache),
then a tiling or inference job timed 3 times (fewer once the runs took 100 s), the median given:

- ``tiling``: tissue found and 256 px level-0 tile coordinates laid over it (tissue >= 50%),
  each tool with its own tissue method, no pixels of tiles decoded: ours ``tile_slide``;
  LazySlide ``pp.find_tissues`` + ``pp.tile_tissues``; TIAToolbox ``tissue_mask`` + a sliding
  window patch extractor's coordinates; histolab ``GridTiler`` coordinates over a
  ``TissueMask``; hs2p ``tile_slide`` (HSV tissue on a thumbnail, tiles asked for in um at
  the slide's mpp); the seed's pyFAST ``PatchGenerator`` (it writes every patch as a JPG, so it
  is stopped after ``--seed-limit-s`` and its rate given);
- ``read (tiling order)`` / ``read (random order)``: our tile table's 256 px level-0 tiles
  (``--read-tiles`` of them) read as RGB arrays, in the table's raster order and in a seeded
  random order as training reads, at each of ``--read-threads`` (1 and 2), every row printing
  its threads: the batched readers with that many threads, ours ``SlideReader.read_tiles``
  (batches of 64), cuCIM (batched ``read_region``, its CPU decoder), hs2p (supertile reads)
  and microtome-wsi (stored tiles decoded in parallel; SVS only), given the whole list
  (``bench/peer_jobs.py``); OpenSlide ``read_region``, tiffslide and fastslide one tile at a
  time, on 1 thread; the bound is libjpeg-turbo (``imagecodecs.jpeg8_decode``) decoding the
  slide's own JPEG tiles from bytes in memory on 1 thread (times the threads: the bound at
  that many);
- ``inference``: tissue found, tiled (every tile touching tissue) and every tile scored by one
  ResNet18 (same weights, same 256 px tiles at ``4 um/px`` on the big slide and at the SVS's
  own ``0.5 um/px``, batch ``--batch``, no loader workers) into a per-tile probability table
  (WSInfer's resized from level 0 as it reads): ours ``tile_slide`` +
  ``predict_tile_classes`` + ``heatmap_from_tiles``; WSInfer ``wsinfer run`` with the same
  network as a local TorchScript model and config; TIAToolbox's ``PatchPredictor`` in WSI
  mode with the same network behind its model interface; ``forward`` is the bound: the
  network alone as ours runs it, on as many random tiles as ours scored (no reading).

A peer that does not install (its rows give pip's error line, from ``bench/peers/setup.sh``) or
does not run offline is one line of the table per task; the rest goes on. Tile counts of each task are compared with ours: a gap above 5% is flagged, and the notes
under the table say what each tool counts. The table is also written to
``<workdir>/peers/peers.tsv``.
Last line: ``tiling_vs_best_peer=<x> reading_vs_best_peer=<y> reading_vs_turbo=<z>
inference_vs_best_peer=<w>`` (speed, ours over the best peer, on the big slide; reading: the
lower of the two orders).

Without ``bench/peers/.venv`` (``setup.sh`` needs pip and the network; it was not installed
on the machine that added the reading rows at equal threads) the bench runs with the project's
own Python: every peer row says it did not run, ours, OpenSlide and turbo run;
``--tasks read`` runs only the reading rows (and our tiling, which makes the tile table).

    bash bench/peers/setup.sh
    flock /tmp/histodetect-heavy.lock bench/peers/.venv/bin/python bench/peers.py  # ~20 min

Measured (2026-12-01, alone on 2 cores, medians of 3, ``real 19m58s``), big slide: tiling ours
0.62 s, TIAToolbox 0.98 s, LazySlide 21.5 s, histolab 56.9 s (median of 2); reading (random
order) ours 97 MP/s, fastslide 65, turbo 107; inference ours 12.9 tiles/s, the network alone
13.2, TIAToolbox 10.5, WSInfer 3.5; last line ``tiling_vs_best_peer=1.58
reading_vs_best_peer=1.43 reading_vs_turbo=0.90 inference_vs_best_peer=1.23``.

With hs2p, cuCIM and microtome-wsi (2026-12-04, alone on 2 cores under the heavy-run lock, 18
min), big slide: tiling hs2p 0.07 s (15,400 tiles, +24%: its HSV mask on the 16 um/px level)
against ours 0.26 s (12,400) and TIAToolbox 0.30 s (11,980); reading (random order) cuCIM 404
MP/s (batches of 64, 2 workers), hs2p 304 (through cuCIM), ours 238, turbo 253, fastslide 153;
microtome-wsi reads Aperio SVS only (none of the big slide's rows): on the SVS it leads both
orders (212 and 194 MP/s against ours 97 and 109); inference ours 41.9 tiles/s, the network
alone 39.4, TIAToolbox 29.1, WSInfer 6.5. The last line ``tiling_vs_best_peer=0.27
reading_vs_best_peer=0.59 reading_vs_turbo=0.94 inference_vs_best_peer=1.44``: the best tiler
is now hs2p (3.7x ours, on a mask 2x coarser than our 8 um/px one and 24% more tiles, so not
the same work), the best reader cuCIM (1.7x ours, its batches decoded on two workers).
An earlier run of the same code on a busy machine gave 0.22 / 0.57 / 1.30 / 1.33.

Reading rows at equal threads with every peer (2026-12-07, ``--tasks read`` with
``bench/peers/.venv``, 2 cores alone under the heavy-run lock, 4 min; MP/s, 4,000 tiles on the
big TIFF, 34 on the SVS (its file tiles are 240 px, so each 256 px read cuts four)):

=========================  ======  =====  =====  =====  =========  =====
row                        ours    cuCIM  hs2p   micro  fastslide  turbo
=========================  ======  =====  =====  =====  =========  =====
big, tiling order, 1 thr   200.5   216.6  183.6  -      120.5      251.6
big, tiling order, 2 thr   305.1   431.5  285.8  -
big, random order, 1 thr   201.3   219.8  197.6  -      127.2      257.3
big, random order, 2 thr   317.3   359.8  307.6  -
svs, tiling order, 1 thr   111.8   39.5   75.5   92.4   41.1       183.2
svs, tiling order, 2 thr   164.0   84.4   102.3  167.3
svs, random order, 1 thr   115.6   43.5   42.2   88.9   40.3       158.3
svs, random order, 2 thr   129.7   72.9   80.6   171.2
=========================  ======  =====  =====  =====  =========  =====

(micro: microtome-wsi, Aperio SVS only; OpenSlide 44 and 30 MP/s, tiffslide 64-68 and 18-24.)
Last line: ``reading_vs_best_peer=0.71 reading_vs_turbo=0.78`` (big; svs 0.76 / 0.73). On one
thread ours leads on the SVS (1.21x microtome in tiling order) and is 0.93x cuCIM on the big
TIFF; on two threads cuCIM scales 2.0x and ours 1.5x. The goal of 1.2x the best peer at equal
threads is out of reach of this decoder: cuCIM's one-thread row is already 0.86 of
libjpeg-turbo decoding the same tiles from memory into freed-and-reused buffers (turbo), so 1.2x
cuCIM would be 1.03x the decoder itself. What ours loses on two threads is not Python: a
profile gives 97% of a read to ``jpeg8_decode``; bare ``jpeg8_decode`` on two Python threads
scales 1.3-1.7x when its outputs are kept (fresh pages faulted in for every tile) and 2.4x when
they are dropped, and repeated runs on this VM vary by up to 30%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from peer_infer import (
    infer_forward,
    infer_ours,
    infer_tiatoolbox,
    infer_wsinfer,
    make_models,
)
from peer_jobs import read_job, slide_mpp, timed_job, warm_slide
from tiling import CMU, SEED_SCRIPT, TILE, write_slide

from histodetect.testdata import path_or_exit

TIMEOUT_S = 900
NOTES = {
    "LazySlide": "tiling: its contours (find_tissues), tiles with >= 50% of their area inside",
    "TIAToolbox": "2.1.3, installed without its pins (torch<2.13); tiling: Otsu mask at 8 um/px, sliding-window patches with >= 50% mask; "
    "inference: its own Otsu mask, every patch that touches it",
    "histolab": "installed without its pins (numpy<=1.24.4, scikit-image<0.19.4: no Python "
    "3.11 wheel); GridTiler coordinates over a TissueMask: a grid per tissue region, anchored "
    "at the region's bounding box, tiles inside the region's mask, no tile pixels checked "
    "(check_tissue would read every tile)",
    "WSInfer": "0.6.1: a stand-in for zarr 2's KVStore (zarr 3 installed, which current "
    "tiffslide needs) and an empty model-zoo registry (its CLI downloads it on import); reads "
    "every patch at level 0 and resizes it (64x the pixels at 4 um/px); its GeoJSON step, "
    "after the CSV, is skipped (it needs worker processes); its own tissue segmentation",
    "seed pyFAST": "PatchGenerator + a JPG file per patch, stopped at --seed-limit-s, not "
    "warmed: rate only, not counted as best peer",
    "turbo": "imagecodecs.jpeg8_decode of the file tiles under the read tiles, bytes in memory "
    "(MP/s of file-tile pixels)",
    "forward": "the network alone as ours runs it, on as many random tiles as ours scored, "
    "no reading or tissue: the bound of inference at this network and batch",
    "fastslide": "starts threads of its own (4 in the process after a read), no tile cache "
    "(its default)",
    "hs2p": "6.1.0; tiling: HSV tissue mask at segmentation downsample 8 um/px over the slide's "
    "mpp (ours: 8 um/px; its default 64), at the nearest level (1 on the one-level SVS), 256 px tiles at the slide's own mpp with >= 50% tissue, a grid per tissue contour; "
    "its backend 'auto' resolves to cuCIM here; reading: in tiling order its supertile stream "
    "over our tiles (2x2 to 8x8 neighbours in one region read, in its own order), in random "
    "order read_regions in batches of 64 (order kept), both with 2 workers",
    "cuCIM": "cucim-cu12 26.10 on its CPU path (no GPU lent to this run: its GPU decoder is "
    "not measured); read_region over the list of locations, batch 64, num_workers 2",
    "microtome": "microtome-wsi 0.1.0 reads Aperio SVS only (the big TIFF has no Aperio "
    "header); the stored tiles under each batch of 64 decoded in parallel (read_batch, 2 "
    "threads), our 256 px tiles cut from them; its JPEG decoder differs from libjpeg-turbo by "
    "at most 1 grey level",
}
"""What each tool counts or does differently, printed under the table."""
NOT_PEERS = ("ours", "turbo", "forward")
"""Rows that are ours or a bound (decoding alone, the network alone), not a peer."""
READERS = ("ours", "openslide", "tiffslide", "fastslide", "cuCIM", "hs2p", "microtome", "turbo")
"""Tools of the reading rows (``bench/peer_jobs.py``)."""
THREADED_READERS = ("ours", "cuCIM", "hs2p", "microtome")
"""Readers that decode a batch on a pool of threads: read again at each ``--read-threads``."""
TASKS = ("tiling", "read", "inference")
PACKAGES = {
    "LazySlide": "lazyslide", "TIAToolbox": "tiatoolbox", "histolab": "histolab",
    "hs2p": "hs2p", "tiffslide": "tiffslide", "fastslide": "fastslide", "cuCIM": "cucim",
    "microtome": "microtome-wsi", "WSInfer": "wsinfer", "turbo": "imagecodecs",
}  # fmt: skip
"""The name ``bench/peers/setup.sh`` installs each peer under."""


# --- tiling jobs -------------------------------------------------------------------------------


def tiling_ours(path: str, out: Path) -> dict[str, Any]:
    from histodetect.slides.tiling import TilingSettings, tile_slide
    from histodetect.slides.tissue import TissueSettings

    mpp = slide_mpp(path)
    settings = TilingSettings(
        tile_um=TILE * mpp, target_mpp=mpp, min_tissue=0.5, tissue=TissueSettings(method="fast")
    )

    def run(p: str) -> dict[str, Any]:
        tiles = tile_slide(p, "bench", settings).tiles
        tiles.to_parquet(out / f"{Path(p).stem}.tiles.parquet", index=False)
        return {"tiles": len(tiles)}

    return timed_job(run, str(warm_slide()), path)


def tiling_lazyslide(path: str, out: Path) -> dict[str, Any]:
    import lazyslide as zs
    from wsidata import open_wsi

    def run(p: str) -> dict[str, Any]:
        store = out / f"{Path(p).stem}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        wsi = open_wsi(p, store=str(store))
        zs.pp.find_tissues(wsi)
        zs.pp.tile_tissues(wsi, TILE, mpp=slide_mpp(p), background_fraction=0.5)
        return {"tiles": len(wsi["tiles"])}

    return timed_job(run, str(warm_slide()), path)


def tiling_tiatoolbox(path: str, out: Path) -> dict[str, Any]:
    from tiatoolbox.tools.patchextraction import get_patch_extractor
    from tiatoolbox.wsicore.wsireader import WSIReader

    def run(p: str) -> dict[str, Any]:
        wsi = WSIReader.open(p, mpp=(slide_mpp(p), slide_mpp(p)))
        mask = wsi.tissue_mask(method="otsu", resolution=8.0, units="mpp")
        extractor = get_patch_extractor(
            "slidingwindow", input_img=wsi, input_mask=mask, patch_size=(TILE, TILE),
            resolution=0, units="level", min_mask_ratio=0.5,
        )  # fmt: skip
        return {"tiles": len(extractor.coordinate_list)}

    return timed_job(run, str(warm_slide()), path)


def tiling_histolab(path: str, out: Path) -> dict[str, Any]:
    from histolab.masks import TissueMask
    from histolab.slide import Slide
    from histolab.tiler import GridTiler

    def run(p: str) -> dict[str, Any]:
        slide = Slide(p, processed_path=str(out / "histolab"))
        tiler = GridTiler(tile_size=(TILE, TILE), level=0, check_tissue=False)
        coords = list(tiler._grid_coordinates_generator(slide, TissueMask()))
        return {"tiles": len(coords)}

    return timed_job(run, str(warm_slide()), path)


def tiling_hs2p(path: str, out: Path) -> dict[str, Any]:
    from hs2p import MaskSamplingConfig, SegmentationConfig, SlideSpec, TilingConfig, tile_slide

    from histodetect.slides.tissue import TissueSettings

    masks = MaskSamplingConfig(pixel_mapping={"background": 0, "tissue": 1},
                               min_coverage={"tissue": 0.5})  # fmt: skip

    def run(p: str) -> dict[str, Any]:
        mpp = slide_mpp(p)
        spec = SlideSpec(sample_id=Path(p).stem, image_path=Path(p), spacing_at_level_0=mpp)
        tiling = TilingConfig(requested_spacing_um=mpp, requested_tile_size_px=TILE,
                              tolerance=0.05, overlap=0.0)  # fmt: skip
        # its mask at our tissue mask's resolution (TissueSettings.mpp, 8 um/px): equal work
        downsample = max(1, round(TissueSettings().mpp / mpp))
        segmentation = SegmentationConfig(method="hsv", downsample=downsample)
        result = tile_slide(spec, tiling=tiling, segmentation=segmentation, masks=masks,
                            num_workers=int(os.environ["PEERS_THREADS"]))  # fmt: skip
        return {"tiles": int(result.num_tiles)}

    return timed_job(run, str(warm_slide()), path)


def tiling_seed(path: str, out: Path, limit_s: float) -> dict[str, Any]:
    """The seed's pyFAST script of ``bench/tiling.py``, stopped at ``limit_s`` (not warmed)."""
    patches = out / "seed_patches"
    shutil.rmtree(patches, ignore_errors=True)
    patches.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT, path, str(patches), str(limit_s)],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=job_env(),
    )  # fmt: skip
    shutil.rmtree(patches, ignore_errors=True)
    if proc.returncode:
        raise RuntimeError(last_line(proc.stderr))
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": res["seconds"], "tiles": res["tiles"], "stopped": res["stopped"]}


# --- the parent: jobs in subprocesses, the table ------------------------------------------------


def job_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env["PEERS_THREADS"] = str(threads)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[key] = env["PEERS_THREADS"]
    env.setdefault("FAST_DISABLE_LOGGING", "1")
    return env


def last_line(text: str) -> str:
    lines = [row for row in text.strip().splitlines() if row.strip()]
    return lines[-1][:200] if lines else "no output"


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "tiling/ours": tiling_ours,
    "tiling/LazySlide": tiling_lazyslide,
    "tiling/TIAToolbox": tiling_tiatoolbox,
    "tiling/histolab": tiling_histolab,
    "tiling/hs2p": tiling_hs2p,
    "infer/ours": infer_ours,
    "infer/WSInfer": infer_wsinfer,
    "infer/TIAToolbox": infer_tiatoolbox,
    "infer/forward": infer_forward,
}


def failed_installs() -> dict[str, str]:
    """Peers that ``bench/peers/setup.sh`` could not install, with pip's error line."""
    path = Path(sys.executable).parent.parent / "peers_failed.txt"
    rows = path.read_text().splitlines() if path.exists() else []
    return dict((*row.split("\t", 1), "")[:2] for row in rows if row.strip())


def run_job(
    name: str, *args: str, script: str = __file__, threads: int | None = None
) -> dict[str, Any]:
    """One job of ``script`` (``--job name args``) in a fresh subprocess of this interpreter,
    with ``threads`` (None: ``--threads``); its JSON, or ``{"error": line}`` (for a peer that
    did not install, pip's error line)."""
    package = PACKAGES.get(name.split("/")[-1])
    failed = failed_installs()
    if package in failed:
        return {"error": f"did not install: {failed[package] or 'see bench/peers/.venv/pip.log'}"}
    cmd = [sys.executable, script, "--job", name, *args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=job_env(threads)
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {TIMEOUT_S} s"}
    if proc.returncode:
        return {"error": last_line(proc.stderr)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def job_main(name: str, rest: list[str]) -> None:
    """Entry point of a job's subprocess: prints its result as one JSON line."""
    task, tool = name.split("/")
    if task == "read":
        path, tiles_file, order = rest
        result = read_job(tool, path, Path(tiles_file), order)
    elif name == "tiling/seed":
        path, out, limit = rest
        result = tiling_seed(path, Path(out), float(limit))
    elif task == "infer":
        path, out, batch = rest
        result = JOBS[name](path, Path(out), int(batch))
    else:
        path, out = rest
        result = JOBS[name](path, Path(out))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=40960, help="level-0 side of the big slide")
    parser.add_argument("--svs", type=Path, help="a real SVS (default: CMU-1-Small-Region.svs)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect_bench_tiling"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--read-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="ours always tiles"
    )
    parser.add_argument("--read-tiles", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed-limit-s", type=float, default=60.0)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"big_{args.side}.tiff"
    if not big.exists():
        write_slide(big, args.side)
    svs = args.svs or path_or_exit(CMU)
    os.environ["PEERS_WARM_SLIDE"] = str(svs)
    os.environ["PEERS_THREADS"] = str(args.threads)
    out = work / "peers"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    make_models(out, args.batch)
    slides = {"big": big, "svs": Path(svs)}
    rows: list[dict[str, Any]] = []

    def add(task: str, slide: str, tool: str, res: dict[str, Any], px: float) -> None:
        row = {"task": task, "slide": slide, "tool": tool, **res}
        if "error" not in res:
            row.setdefault("mp", px / 1e6)
            row["mp_s"] = row["mp"] / res["seconds"]
        rows.append(row)
        print_row(row)

    for key, path in slides.items():
        area = float(np.prod(openslide_dims(path)))
        tilers = ("ours", "LazySlide", "TIAToolbox", "histolab", "hs2p")
        for tool in tilers if "tiling" in args.tasks else ("ours",):  # ours: the tile table
            add("tiling", key, tool, run_job(f"tiling/{tool}", str(path), str(out)), area)
        if (
            key == "big" and "tiling" in args.tasks
        ):  # on the one-level SVS its PatchGenerator gave 1 patch in 40 s
            seed = run_job("tiling/seed", str(path), str(out), str(args.seed_limit_s))
            add("tiling", key, "seed pyFAST", seed, area)
        table = pd.read_parquet(out / f"{path.stem}.tiles.parquet")
        mid = max(0, len(table) // 2 - args.read_tiles // 2)  # a run of the raster order
        table = table.iloc[mid : mid + args.read_tiles]
        tiles_file = out / f"{path.stem}.read.parquet"
        table.to_parquet(tiles_file, index=False)
        for order in ("tiling", "random") if "read" in args.tasks else ():
            for threads in args.read_threads:
                for tool in READERS if threads == 1 else THREADED_READERS:
                    res = run_job(
                        f"read/{tool}", str(path), str(tiles_file), order, threads=threads
                    )
                    add(f"read ({order} order)", key, tool, {**res, "threads": threads}, 0.0)
        for tool in (
            ("ours", "WSInfer", "TIAToolbox", "forward") if "inference" in args.tasks else ()
        ):
            res = run_job(f"infer/{tool}", str(path), str(out), str(args.batch))
            add("inference", key, tool, res, area)
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "peers.tsv", sep="\t", index=False)
    print_table(summary, args.threads)
    print(bounds_line(summary))
    print(headline(summary))


def openslide_dims(path: Path) -> tuple[int, int]:
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        return s.dimensions


def print_row(row: dict[str, Any], suffix: str = "") -> None:
    threads = f"{int(row['threads'])} thr" if "threads" in row else ""
    head = f"{row['task']:<22} {row['slide']:<4} {row['tool']:<12} {threads:<5}"
    if "error" in row:
        print(f"{head} did not run: {row['error']}", flush=True)
        return
    extra = " (stopped at the limit)" if row.get("stopped") is True else ""
    if row.get("runs", 1) > 1:
        extra += f" median of {int(row['runs'])}"
    if row["task"] == "inference":
        extra += f" {row['tiles'] / row['seconds']:6.1f} tiles/s"
    rss = f"{row['rss_mb']:7.0f} MB" if "rss_mb" in row else "      - MB"
    print(
        f"{head} {row['seconds']:8.2f} s {int(row['tiles']):7d} tiles {row['mp_s']:8.1f} MP/s "
        f"{rss}{extra}{suffix}",
        flush=True,
    )


def print_table(summary: pd.DataFrame, threads: int) -> None:
    """The whole table with each row's tile count against ours, the failed peers and notes."""
    print(f"\n== {threads} threads for every tool (OMP/MKL/OpenBLAS/numba, torch, the batched "
          "readers' pools; a reading row: the threads it prints); tile reads one at a time but "
          "for ours, cuCIM, hs2p and microtome (batches of 64); big = the --side px TIFF, "
          "svs = the real SVS ==")  # fmt: skip
    for row in summary.to_dict("records"):
        ours = summary[(summary.task == row["task"]) & (summary.slide == row["slide"])]
        ours = ours[(ours.tool == "ours") & ours.get("tiles", pd.Series(dtype=float)).notna()]
        gap = ""
        if row["tool"] not in NOT_PEERS and pd.notna(row.get("tiles")) and len(ours):
            rel = row["tiles"] / ours.tiles.iloc[0] - 1
            if abs(rel) > 0.05 and row.get("stopped") is not True:
                gap = f"  tiles {rel:+.0%} vs ours (see notes)"
        print_row({k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))},
                  suffix=gap)  # fmt: skip
    for package, why in failed_installs().items():
        print(f"did not install: {package}: {why}")
    for tool, note in NOTES.items():
        print(f"note {tool}: {note}")


def reading_vs_best_peer(rows: pd.DataFrame, slide: str) -> float:
    """Ours over the best peer reading ``slide`` with the same threads: the lowest ratio over
    the two orders and the thread counts where a peer ran."""
    reads = rows[(rows.slide == slide) & rows.task.str.startswith("read") & rows.threads.notna()]
    ratios = []
    for _, group in reads.groupby(["task", "threads"]):
        ours, peers = group[group.tool == "ours"].mp_s, group[~group.tool.isin(NOT_PEERS)].mp_s
        if len(ours) and len(peers):
            ratios.append(float(ours.iloc[0] / peers.max()))
    return min(ratios, default=float("nan"))


def one_thread(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of tasks without threads and the reading rows on 1 thread."""
    if "threads" not in rows:
        rows = rows.assign(threads=np.nan)
    return rows[rows.threads.isna() | rows.threads.eq(1)]


def bounds_line(summary: pd.DataFrame) -> str:
    """Ours against the bounds per slide: decoding alone (reading, 1 thread), the network alone;
    and ours against the best reader at equal threads."""
    ok = summary[summary.get("error", pd.Series(None, index=summary.index)).isna()]
    if "threads" not in ok:
        ok = ok.assign(threads=np.nan)

    def share(task: str, slide: str, bound: str) -> float:
        rows = one_thread(ok[(ok.task == task) & (ok.slide == slide)]).set_index("tool").mp_s
        return float(rows.get("ours", np.nan) / rows.get(bound, np.nan))

    return " ".join(
        f"{slide}: reading_vs_turbo={share('read (random order)', slide, 'turbo'):.2f} "
        f"reading_vs_best_peer={reading_vs_best_peer(ok, slide):.2f} "
        f"inference_vs_forward={share('inference', slide, 'forward'):.2f};"
        for slide in ("big", "svs")
    )


def headline(summary: pd.DataFrame) -> str:
    """The last line: ours over the best peer per task on the big slide (speed ratios)."""
    for column, empty in (("error", None), ("stopped", False), ("threads", np.nan)):
        if column not in summary:
            summary[column] = empty
    big = one_thread(summary[(summary.slide == "big") & summary.error.isna()])
    counted = big[big.stopped.ne(True)]  # a stopped run has no full count

    def speed(task: str, tool: str) -> float:
        rows = big[(big.task == task) & (big.tool == tool)]
        return float(rows.mp_s.iloc[0]) if len(rows) else float("nan")

    def ratio(task: str) -> float:
        peers = counted[(counted.task == task) & ~counted.tool.isin(NOT_PEERS)]
        return speed(task, "ours") / float(peers.mp_s.max()) if len(peers) else float("nan")

    everyone = summary[summary.error.isna() & summary.stopped.ne(True)]
    reading = reading_vs_best_peer(everyone, "big")
    turbo = speed("read (random order)", "ours") / speed("read (random order)", "turbo")
    return (
        f"tiling_vs_best_peer={ratio('tiling'):.2f} reading_vs_best_peer={reading:.2f} "
        f"reading_vs_turbo={turbo:.2f} inference_vs_best_peer={ratio('inference'):.2f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("FAST_DISABLE_LOGGING", "1")
    if len(sys.argv) > 2 and sys.argv[1] == "--job":
        job_main(sys.argv[2], sys.argv[3:])
    else:
        main()
