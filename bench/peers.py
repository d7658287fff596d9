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
  ``TissueMask``; the seed's pyFAST ``PatchGenerator`` (it writes every patch as a JPG, so it
  is stopped after ``--seed-limit-s`` and its rate given);
- ``read (tiling order)`` / ``read (random order)``: our tile table's 256 px level-0 tiles
  (``--read-tiles`` of them) read as RGB arrays, in the table's raster order and in a seeded
  random order as training reads: our ``SlideReader``, OpenSlide ``read_region``, tiffslide,
  fastslide; the bound is libjpeg-turbo (``imagecodecs.jpeg8_decode``) decoding the slide's
  own JPEG tiles from bytes already in memory;
- ``inference``: tissue found, tiled (every tile touching tissue) and every tile scored by one
  ResNet18 (same weights, same 256 px tiles at ``4 um/px`` on the big slide and at the SVS's
  own ``0.5 um/px``, batch ``--batch``, no loader workers) into a per-tile probability table
  (WSInfer's resized from level 0 as it reads): ours ``tile_slide`` +
  ``predict_tile_classes`` + ``heatmap_from_tiles``; WSInfer ``wsinfer run`` with the same
  network as a local TorchScript model and config; TIAToolbox's ``PatchPredictor`` in WSI
  mode with the same network behind its model interface; ``forward`` is the bound: the
  network alone as ours runs it, on as many random tiles as ours scored (no reading).

A peer that does not install or does not run offline is one line of the table; the rest goes
on. Tile counts of each task are compared with ours: a gap above 5% is flagged, and the notes
under the table say what each tool counts. The table is also written to
``<workdir>/peers/peers.tsv``.
Last line: ``tiling_vs_best_peer=<x> reading_vs_best_peer=<y> reading_vs_turbo=<z>
inference_vs_best_peer=<w>`` (speed, ours over the best peer, on the big slide; reading: the
lower of the two orders).

    bash bench/peers/setup.sh
    flock /tmp/histodetect-heavy.lock bench/peers/.venv/bin/python bench/peers.py  # ~20 min

Measured (2026-12-01, alone on 2 cores, medians of 3, ``real 19m58s``), big slide: tiling ours
0.62 s, TIAToolbox 0.98 s, LazySlide 21.5 s, histolab 56.9 s (median of 2); reading (random
order) ours 97 MP/s, fastslide 65, turbo 107; inference ours 12.9 tiles/s, the network alone
13.2, TIAToolbox 10.5, WSInfer 3.5. The line before the last:
``big: reading_vs_turbo=0.90 inference_vs_forward=0.98; svs: reading_vs_turbo=0.60
inference_vs_forward=0.93;`` and the last
``tiling_vs_best_peer=1.58 reading_vs_best_peer=1.43 reading_vs_turbo=0.90
inference_vs_best_peer=1.23``. Inference runs at the network's own speed, so no tool can beat
TIAToolbox (0.79 of the bound) by 1.5x with this network and batch without doing less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tiling import CMU, MPP, SEED_SCRIPT, TILE, raw_jpegs, write_slide

from histodetect.testdata import path_or_exit

INFER_MPP = {"big": 8 * MPP, "svs": MPP}
"""Resolution of the inference grid per slide (the big slide's level 3; the SVS's level 0)."""
INFER_MIN_TISSUE = 0.01
"""Tissue fraction of the inference grid's tiles (WSInfer and TIAToolbox keep every patch
that touches tissue; the big slide's mirrored pattern puts about half of each 1 mm tile in
tissue, so 0.5 would keep a few tiles only)."""
TIMEOUT_S = 900
MIN_READS = 2000
"""Tiles read per tool and order, at least (in passes over a slide's tile list)."""
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
}
"""What each tool counts or does differently, printed under the table."""
REPEATS, REPEAT_BUDGET_S = 3, 100.0
"""Timed runs of a tiling or inference job, the median given: single runs varied by 25% (a
second's tiling) to 40% (a 30 s inference) between runs on the 2-core machine."""
NOT_PEERS = ("ours", "turbo", "forward")
"""Rows that are ours or a bound (decoding alone, the network alone), not a peer."""


# --- measurements inside a job's process -------------------------------------------------------


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


# --- reading jobs -------------------------------------------------------------------------------


def reader_for(tool: str, path: str) -> Callable[[int, int], np.ndarray]:
    """A function reading the 256 px level-0 tile at ``(x, y)`` as an RGB array, per tool."""
    if tool == "ours":
        from histodetect.slides.reader import SlideReader

        reader = SlideReader(path)
        return lambda x, y: reader.read_tile(x, y, 0, TILE, TILE)
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


def read_job(tool: str, path: str, tiles_file: Path, order: str) -> dict[str, Any]:
    """Every tile of ``tiles_file`` read in ``order``, in passes of a fresh reader each.

    Each pass opens its own reader (not timed), so no tool's tile cache carries over from the
    warm-up or from the pass before; passes repeat until at least :data:`MIN_READS` tiles are
    read (a small slide has few tissue tiles). One untimed pass warms the decoders and the
    page cache.
    """
    tiles = pd.read_parquet(tiles_file)[["x", "y"]].to_numpy()
    if tool == "turbo":
        return turbo_job(path, tiles)
    if order == "random":
        tiles = tiles[np.random.default_rng(0).permutation(len(tiles))]
    passes = -(-MIN_READS // len(tiles))
    seconds, check = 0.0, 0
    for k in range(passes + 1):
        read = reader_for(tool, path)
        start = time.perf_counter()
        for x, y in tiles:
            check += int(read(int(x), int(y))[128, 128, 1])
        if k:  # pass 0 is the warm-up
            seconds += time.perf_counter() - start
        del read
    n = passes * len(tiles)
    return {"seconds": seconds, "tiles": len(tiles), "passes": passes,
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


# --- inference jobs -----------------------------------------------------------------------------


def make_models(out: Path, batch: int) -> dict[str, Path]:
    """One ResNet18 (seeded weights), saved for ours, as TorchScript + config for WSInfer."""
    import torch

    from histodetect.training.model import build_model, save_model

    torch.manual_seed(0)
    net = build_model("resnet18").eval()
    ours = out / "resnet18.pt"
    save_model(ours, net, {"tile_px": TILE})
    scripted = out / "resnet18.torchscript.pt"
    torch.jit.script(net).save(str(scripted))
    return {"ours": ours, "torchscript": scripted}


def wsinfer_config(out: Path, mpp: float) -> Path:
    from histodetect.training.data import IMAGENET_MEAN, IMAGENET_STD

    config = {
        "spec_version": "1.0", "architecture": "resnet18", "num_classes": 1,
        "class_names": ["lesion"], "patch_size_pixels": TILE, "spacing_um_px": mpp,
        "transform": [  # it reads each patch at level 0: resized to the model's 256 px
            {"name": "Resize", "arguments": {"size": TILE}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
        ],
    }  # fmt: skip
    path = out / f"wsinfer_{mpp:.4f}.json"
    path.write_text(json.dumps(config))
    return path


def infer_ours(path: str, out: Path, batch: int) -> dict[str, Any]:
    import torch

    from histodetect.detection.inference import heatmap_from_tiles, predict_tile_classes
    from histodetect.slides.tiling import TilingSettings, tile_slide
    from histodetect.slides.tissue import TissueSettings

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model = out / "resnet18.pt"

    def run(p: str) -> dict[str, Any]:
        mpp = infer_mpp(p)
        # every tile touching tissue, as WSInfer and TIAToolbox keep their patches
        settings = TilingSettings(tile_um=TILE * mpp, target_mpp=mpp, min_tissue=INFER_MIN_TISSUE,
                                  tissue=TissueSettings(method="fast"))  # fmt: skip
        tiled = tile_slide(p, "bench", settings)
        tiles = tiled.tiles.assign(path=p)
        probs, _ = predict_tile_classes(tiles, [model], batch_size=batch, device="cpu")
        w, h = tiled.summary["width"], tiled.summary["height"]
        heatmap_from_tiles(tiles, probs, slide_id="bench", mpp=mpp, level=0,
                           slide_width=w, slide_height=h)  # fmt: skip
        (out / f"{Path(p).stem}.infer.json").write_text(json.dumps({"tiles": len(tiles)}))
        return {"tiles": len(tiles)}

    return timed_job(run, str(warm_slide()), path)


def infer_forward(path: str, out: Path, batch: int) -> dict[str, Any]:
    """The bound of inference: the network alone, as ours runs it (channels_last, inference
    mode, same batch), on as many random 256 px uint8 tiles as ours scored; no reading."""
    import torch

    from histodetect.training.data import prepare_batch
    from histodetect.training.model import load_model

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    net, meta = load_model(out / "resnet18.pt")
    net = net.eval().to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, TILE, TILE), dtype=torch.uint8, generator=gen)
    norm = {"mean": tuple(meta["mean"]), "std": tuple(meta["std"])}

    def run(p: str) -> dict[str, Any]:
        n = json.loads((out / f"{Path(p).stem}.infer.json").read_text())["tiles"]
        with torch.inference_mode():
            for start in range(0, n, batch):
                x = prepare_batch(images[: min(batch, n - start)], torch.device("cpu"),
                                  channels_last=True, **norm)  # fmt: skip
                torch.sigmoid(net(x))
        return {"tiles": n}

    return timed_job(run, str(warm_slide()), path)


def infer_wsinfer(path: str, out: Path, batch: int) -> dict[str, Any]:
    import torch
    import zarr.storage

    # WSInfer 0.6.1 patches zarr 2's KVStore on import; zarr 3 (which current tiffslide needs)
    # has none: a stand-in lets it import (it reads slides through OpenSlide, not zarr)
    if not hasattr(zarr.storage, "KVStore"):
        zarr.storage.KVStore = type("KVStore", (), {})
    import wsinfer_zoo.client as zoo

    # its CLI downloads the model zoo's registry on import, even for a local model: offline
    # here, an empty registry stands in
    zoo.load_registry = lambda registry_file=None: zoo.ModelRegistry(models={})
    from wsinfer.cli.infer import run as wsinfer_run

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    def run(p: str) -> dict[str, Any]:
        mpp = infer_mpp(p)
        slides = out / "wsinfer_in"
        results = out / "wsinfer_out"
        for d in (slides, results):
            shutil.rmtree(d, ignore_errors=True)
        slides.mkdir()
        (slides / Path(p).name).symlink_to(p)
        args = ["--wsi-dir", str(slides), "--results-dir", str(results),
                "--model-path", str(out / "resnet18.torchscript.pt"),
                "--config", str(wsinfer_config(out, mpp)), "--batch-size", str(batch),
                "--num-workers", "0"]  # fmt: skip
        try:
            wsinfer_run.main(args, standalone_mode=False)
        except ValueError as err:  # its GeoJSON step, after the CSV, needs a worker process
            if "max_workers" not in str(err):
                raise
        table = next((results / "model-outputs-csv").glob("*.csv"))
        return {"tiles": len(pd.read_csv(table))}

    return timed_job(run, str(warm_slide()), path)


def infer_tiatoolbox(path: str, out: Path, batch: int) -> dict[str, Any]:
    import torch
    from tiatoolbox.models.engine.io_config import IOPatchPredictorConfig
    from tiatoolbox.models.engine.patch_predictor import PatchPredictor
    from tiatoolbox.models.models_abc import ModelABC

    from histodetect.training.model import load_model

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    net, meta = load_model(out / "resnet18.pt")

    class Classifier(ModelABC):
        """Our network behind TIAToolbox's model interface (uint8 NHWC batches in)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(meta["std"]).view(1, 3, 1, 1) * 255)

        def forward(self, imgs: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net((imgs - self.mean) / self.std))

        @staticmethod
        def infer_batch(model: Any, batch_data: Any, *, device: str) -> np.ndarray:
            x = batch_data.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
            model.eval()
            with torch.inference_mode():
                return model(x.contiguous()).cpu().numpy()

    predictor = PatchPredictor(model=Classifier(), batch_size=batch, device="cpu", verbose=False)

    def run(p: str) -> dict[str, Any]:
        mpp = infer_mpp(p)
        ioconfig = IOPatchPredictorConfig(
            input_resolutions=[{"units": "mpp", "resolution": mpp}],
            patch_input_shape=(TILE, TILE), stride_shape=(TILE, TILE),
        )  # fmt: skip
        save = out / "tiatoolbox_out"
        shutil.rmtree(save, ignore_errors=True)
        result = predictor.run(
            images=[Path(p)], patch_mode=False, ioconfig=ioconfig, save_dir=save,
            overwrite=True, output_type="zarr",
        )  # fmt: skip
        import zarr

        store = zarr.open(str(next(iter(result.values())) if isinstance(result, dict) else result))
        return {"tiles": int(store["coordinates"].shape[0])}

    return timed_job(run, str(warm_slide()), path)


# --- the parent: jobs in subprocesses, the table ------------------------------------------------


def slide_mpp(path: str) -> float:
    import openslide

    with openslide.OpenSlide(path) as s:
        return float(s.properties[openslide.PROPERTY_NAME_MPP_X])


def infer_mpp(path: str) -> float:
    """Resolution of the inference grid: :data:`INFER_MPP` of the SVS or of the big slide."""
    return INFER_MPP["svs" if path == str(warm_slide()) else "big"]


def warm_slide() -> Path:
    return Path(os.environ["PEERS_WARM_SLIDE"])


def job_env() -> dict[str, str]:
    env = dict(os.environ)
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
    "infer/ours": infer_ours,
    "infer/WSInfer": infer_wsinfer,
    "infer/TIAToolbox": infer_tiatoolbox,
    "infer/forward": infer_forward,
}


def run_job(name: str, *args: str, script: str = __file__) -> dict[str, Any]:
    """One job of ``script`` (``--job name args``) in a fresh subprocess of this interpreter; its
    JSON, or ``{"error": line}``."""
    cmd = [sys.executable, script, "--job", name, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=job_env())
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
        for tool in ("ours", "LazySlide", "TIAToolbox", "histolab"):
            add("tiling", key, tool, run_job(f"tiling/{tool}", str(path), str(out)), area)
        if key == "big":  # on the one-level SVS its PatchGenerator gave 1 patch in 40 s
            seed = run_job("tiling/seed", str(path), str(out), str(args.seed_limit_s))
            add("tiling", key, "seed pyFAST", seed, area)
        table = pd.read_parquet(out / f"{path.stem}.tiles.parquet")
        mid = max(0, len(table) // 2 - args.read_tiles // 2)  # a run of the raster order
        table = table.iloc[mid : mid + args.read_tiles]
        tiles_file = out / f"{path.stem}.read.parquet"
        table.to_parquet(tiles_file, index=False)
        for order in ("tiling", "random"):
            for tool in ("ours", "openslide", "tiffslide", "fastslide", "turbo"):
                res = run_job(f"read/{tool}", str(path), str(tiles_file), order)
                add(f"read ({order} order)", key, tool, res, 0.0)
        for tool in ("ours", "WSInfer", "TIAToolbox", "forward"):
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
    head = f"{row['task']:<22} {row['slide']:<4} {row['tool']:<12}"
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
    print(f"\n== {threads} threads for every tool (OMP/MKL/OpenBLAS/numba, torch); tile "
          "reads one at a time; big = 40,960 px TIFF, svs = the real SVS ==")  # fmt: skip
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
    failed = Path(sys.executable).parent.parent / "peers_failed.txt"
    if failed.exists() and failed.read_text().split():
        print(f"did not install: {', '.join(failed.read_text().split())}")
    for tool, note in NOTES.items():
        print(f"note {tool}: {note}")


def bounds_line(summary: pd.DataFrame) -> str:
    """Ours against the bounds per slide: decoding alone (reading), the network alone."""
    ok = summary[summary.get("error", pd.Series(None, index=summary.index)).isna()]

    def share(task: str, slide: str, bound: str) -> float:
        rows = ok[(ok.task == task) & (ok.slide == slide)].set_index("tool").mp_s
        return float(rows.get("ours", np.nan) / rows.get(bound, np.nan))

    return " ".join(
        f"{slide}: reading_vs_turbo={share('read (random order)', slide, 'turbo'):.2f} "
        f"inference_vs_forward={share('inference', slide, 'forward'):.2f};"
        for slide in ("big", "svs")
    )


def headline(summary: pd.DataFrame) -> str:
    """The last line: ours over the best peer per task on the big slide (speed ratios)."""
    for column, empty in (("error", None), ("stopped", False)):
        if column not in summary:
            summary[column] = empty
    big = summary[(summary.slide == "big") & summary.error.isna()]
    counted = big[big.stopped.ne(True)]  # a stopped run has no full count

    def speed(task: str, tool: str) -> float:
        rows = big[(big.task == task) & (big.tool == tool)]
        return float(rows.mp_s.iloc[0]) if len(rows) else float("nan")

    def ratio(task: str) -> float:
        peers = counted[(counted.task == task) & ~counted.tool.isin(NOT_PEERS)]
        return speed(task, "ours") / float(peers.mp_s.max()) if len(peers) else float("nan")

    reading = min(ratio("read (tiling order)"), ratio("read (random order)"))
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
