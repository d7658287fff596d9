"""Throughput of ensemble inference against separate passes and pure compute (CPU or GPU).

One synthetic slide, ``k`` fold models with a small randomly initialised backbone (throughput
does not depend on the weights). Measured side by side in one run:

- ``ensemble``: :func:`histodetect.detection.inference.predict_tiles` with all ``k`` models (tiles read once);
- ``separate``: ``k`` calls of ``predict_tiles`` with one model each (tiles read ``k`` times);
- ``compute``: the ``k`` models on the same tiles already decoded into one uint8 tensor;
- ``read``: the tiles read and decoded alone (the loader, no model). Reading once saves
  ``k - 1`` reads, so with ``r`` the read share of a single-model pass the speed-up over
  separate passes is at most ``k / (1 + (k - 1) * (1 - r))``: close to ``k`` only when reading
  dominates (fast accelerators), close to 1 when compute dominates (CPU).

Last line: ``ensemble_vs_compute=<x> ensemble_speedup_vs_separate=<y> tiles_per_s=<z>``.

    .venv/bin/python bench/inference.py --folds 5 --backbone resnet10t --workers 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from histodetect.detection.inference import load_ensemble, predict_tiles
from histodetect.fit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TileDataset,
    make_loader,
    prepare_batch,
    slide_order,
)
from histodetect.fit.model import build_model, resolve_device, save_model
from histodetect.slides.synthetic import make_cohort
from histodetect.slides.tiling import TilingSettings, tile_slide
from histodetect.slides.tissue import TissueSettings


def make_inputs(out: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, list[Path]]:
    """One synthetic slide with its tiles, and ``args.folds`` model files."""
    samples, _ = make_cohort(
        out / "cohort", n_slides=2, n_patients=2, width=args.size, height=args.size,
        negative_slides=0, seed=1,
    )  # fmt: skip
    path = str(samples.path.iloc[0])
    settings = TilingSettings(tile_um=args.tile_um, target_mpp=2.0, tissue=TissueSettings("otsu"))
    tiles = tile_slide(path, "bench", settings).tiles.assign(path=path)
    models = []
    for fold in range(args.folds):
        torch.manual_seed(fold)
        model_path = out / f"fold_{fold}.pt"
        save_model(model_path, build_model(args.backbone), {"tile_px": int(tiles.tile_px[0])})
        models.append(model_path)
    return tiles, models


def pure_compute(tiles: pd.DataFrame, models: list[Path], args: argparse.Namespace) -> float:
    """Seconds of the ``k`` models on pre-decoded tiles (same batches, same device work)."""
    dataset = TileDataset(tiles)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    dev = resolve_device(args.device)
    nets, _ = load_ensemble(models, dev)
    cuda = dev.type == "cuda"
    nets = [m.to(memory_format=torch.channels_last) for m in nets]  # as predict_tiles does
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(images), args.batch):
            x = prepare_batch(
                images[s : s + args.batch], dev, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                channels_last=True,
            )  # fmt: skip
            ctx = (
                torch.autocast("cuda", torch.bfloat16)
                if cuda
                else torch.autocast("cpu", enabled=False)
            )
            with ctx:
                probs = torch.stack([torch.sigmoid(m(x)[:, 0].float()) for m in nets]).mean(0)
            probs.cpu()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def read_only(tiles: pd.DataFrame, args: argparse.Namespace) -> float:
    """Seconds to read and decode the tiles alone, as ``predict_tiles`` feeds them."""
    start = time.perf_counter()
    for _ in make_loader(tiles.iloc[slide_order(tiles)], args.batch, args.workers, False, 0):
        pass
    return time.perf_counter() - start


def timed_predict(tiles: pd.DataFrame, models: list[Path], args: argparse.Namespace) -> float:
    start = time.perf_counter()
    predict_tiles(
        tiles, models, batch_size=args.batch, num_workers=args.workers, device=args.device
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=16384, help="slide side, level-0 px")
    parser.add_argument("--tile-um", type=float, default=128.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        tiles, models = make_inputs(Path(tmp), args)
        n = len(tiles)
        timed_predict(tiles.head(args.batch), models, args)  # warm-up (threads, allocator)
        runs: dict[str, list[float]] = {"ensemble": [], "separate": [], "compute": [], "read": []}
        for _ in range(args.repeats):  # interleaved, best of: the CPU is shared
            runs["ensemble"].append(timed_predict(tiles, models, args))
            runs["separate"].append(sum(timed_predict(tiles, [m], args) for m in models))
            runs["compute"].append(pure_compute(tiles, models, args))
            runs["read"].append(read_only(tiles, args))
        t_ens, t_sep, t_comp, t_read = (
            min(runs[k]) for k in ("ensemble", "separate", "compute", "read")
        )
    share = t_read * args.folds / t_sep  # read share of a single-model pass
    info = {
        "tiles": n, "tile_px": int(tiles.tile_px[0]), "folds": args.folds,
        "backbone": args.backbone, "workers": args.workers, "threads": torch.get_num_threads(),
        "device": str(resolve_device(args.device)), "ensemble_s": round(t_ens, 2),
        "separate_s": round(t_sep, 2), "compute_s": round(t_comp, 2), "read_s": round(t_read, 2),
        "read_share_of_one_model_pass": round(share, 3),
        "speedup_bound": round(args.folds / (1 + (args.folds - 1) * (1 - share)), 3),
    }  # fmt: skip
    print(json.dumps(info))
    print(
        f"ensemble_vs_compute={t_ens / t_comp:.3f} "
        f"ensemble_speedup_vs_separate={t_sep / t_ens:.3f} tiles_per_s={n / t_ens:.1f}"
    )


if __name__ == "__main__":
    main()
