"""Feature extraction side by side: ours, LazySlide and TIAToolbox, against the network alone.

The same tiles, encoded by the same encoder, by each tool in a fresh subprocess with the same
thread settings (``--threads``, 2 by default: ``OMP_NUM_THREADS`` and friends,
``torch.set_num_threads``), the same batch (``--batch``) and the same loader workers
(``--workers``, our config's default 1). The encoder is a timm ResNet18 without its classifier
(512 features), randomly initialised with one seed, its weights saved once to a file and loaded
into every tool. The tiles are our tile table's: 224 px at the SVS's own 0.5 um/px on the real
``CMU-1-Small-Region.svs`` (through ``histodetect.testdata``, or ``--svs PATH``), and at
``4 um/px`` (its level 3) on the 40,960 px JPEG-tiled TIFF of real tissue that
``bench/tiling.py`` makes (reused when it is already in ``--workdir``); tissue >= 50%. Each tool
is warmed by one untimed run of the same job, then timed 3 times (fewer once the timed runs
took ``--cap-s``), the median given:

- ``ours``: :func:`histodetect.features.extract.extract_slide` on the tile table: tiles read by
  a loader worker while the encoder runs (:func:`~histodetect.features.extract.encode_batch`),
  the h5 (float16 features, coords, grid, attributes) written;
- ``LazySlide``: the tile table's coordinates given to ``wsidata.io.add_tiles`` with a
  ``TileSpec`` at the same size and resolution, ``zs.tl.feature_extraction`` with the same
  weights as a ``lazyslide_models.TimmModel`` (``checkpoint_path``) and a transform without
  its default resize and centre crop (so that it sees the same 224 px pixels), then
  ``wsi.write()`` (its SpatialData zarr store: tiles and the features table);
- ``TIAToolbox``: ``DeepFeatureExtractor`` in WSI mode with an ``IOPatchPredictorConfig``
  (224 px patches and stride at the same mpp) and the same network behind its ``ModelABC``;
  it lays its own grid, so it is given a mask that covers exactly our tiles (each tile's box
  shrunk by an eighth on every side); it writes a zarr store;
- ``forward``: the bound, the encoder alone as ours runs it (``encode_batch``: channels_last,
  inference mode, same batch) on as many random uint8 tiles as ours encoded, no reading.

Both tile counts are printed per tool (a gap above 5% is flagged); ``feat_diff`` is the largest
difference between the tool's mean feature vector over all tiles and ours (ours float16 on
disk), relative to ours' largest: a check that the tiles and the weights are the same. Bytes per
tile are each tool's output on disk over its tiles. A peer that does not install or run is one
line of the table; the rest goes on. The table is written to ``<workdir>/features/features.tsv``.
Last line: ``features_vs_forward=<a> features_vs_best_peer=<b> bytes_per_tile=<c>`` (tiles/s of
ours over the network alone and over the best peer, bytes per tile of our h5; on the big slide,
the SVS when ``--slides svs``).

    bash bench/peers/setup.sh
    flock /tmp/histodetect-heavy.lock bench/peers/.venv/bin/python bench/features.py  # ~3 min

Measured (2026-12-04, alone on 2 cores, medians of 3, 176 s wall including making the big
slide): big slide, 220 tiles: ours 55.8 tiles/s (3.94 s), the encoder alone 56.4, LazySlide
39.8, TIAToolbox 32.7; SVS, 48 tiles: ours 52.9, the encoder alone 60.0, LazySlide 35.5,
TIAToolbox 26.3. Every tool encoded the same tiles (no count gap) with the same weights
(``feat_diff`` at most 8e-5: ours' float16 rounding). Bytes per tile, big / SVS: ours 1109 /
1283 (uncompressed float16, attributes spread over few tiles on the SVS), LazySlide 1224 / 2415,
TIAToolbox 744 / 1654 (its zarr compresses float32). The line before the last
``svs: features_vs_forward=0.88 features_vs_best_peer=1.49; big: features_vs_forward=0.99
features_vs_best_peer=1.40;`` and the last ``features_vs_forward=0.99 features_vs_best_peer=1.40
bytes_per_tile=1109``. On the big slide ours runs at the encoder's own speed (the loader worker's
reads hide behind the forward pass); the SVS's 48 tiles are one batch, so nothing overlaps: the
worker's start and the batch's reads come first (0.09 s in a profile, the h5 write 2 ms), 12%.
Runs sharing the 2 cores with other jobs were 3x slower for every tool, with about the same
ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import peer_jobs
from peers import openslide_dims, run_job, timed_job
from tiling import CMU, MPP, write_slide

from histodetect.testdata import path_or_exit

TILE_PX = 224
TARGET_MPP = {"svs": MPP, "big": 8 * MPP}
"""Resolution of the tiles per slide: the SVS's own (level 0), the big slide's level 3."""
MIN_TISSUE = 0.5
SEED = 0
NOT_PEERS = ("ours", "forward")
Job = Callable[[str], dict[str, Any]]
"""A job's run on one slide (by key), as :func:`peers.timed_job` calls it."""
TOOLS = ("ours", "LazySlide", "TIAToolbox", "forward")
NOTES = {
    "LazySlide": "our coordinates (wsidata add_tiles + TileSpec); its default transform "
    "(resize to 256, centre crop 224) replaced by ToImage/ToDtype/Normalize only; bytes: its "
    "whole zarr store (tile polygons, features table, metadata)",
    "TIAToolbox": "2.1.3 without its pins (torch<2.13); its own sliding-window grid over a mask "
    "of our tiles; bytes: its zarr store (float32 features, coordinates)",
    "forward": "the encoder alone as ours runs it, on as many random tiles as ours encoded, no "
    "reading: the bound at this network and batch",
}


# --- jobs (each in a fresh subprocess) ---------------------------------------------------------


def context() -> dict[str, Any]:
    return json.loads(Path(os.environ["FEATURES_CONTEXT"]).read_text())


def threads() -> int:
    import torch

    n = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(n)
    return n


def mean_features(features: np.ndarray) -> list[float]:
    return np.asarray(features, np.float64).mean(axis=0).tolist()


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timm_resnet(weights: str) -> Any:
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=0, checkpoint_path=weights)


def job_ours(ctx: dict[str, Any]) -> Job:
    from histodetect.features.encoder import build_encoder
    from histodetect.features.extract import extract_slide
    from histodetect.features.settings import EncoderSpec

    threads()
    spec = EncoderSpec(model="resnet18", source="checkpoint", checkpoint=ctx["weights"])
    encoder = build_encoder(spec, TILE_PX)
    out = Path(ctx["out"]) / "ours"
    out.mkdir(exist_ok=True)

    def run(key: str) -> dict[str, Any]:
        s = ctx["slides"][key]
        tiles = pd.read_parquet(s["tiles"])
        summary = json.loads(Path(s["summary"]).read_text())
        h5 = out / f"{key}.h5"
        data = extract_slide(
            tiles, summary, encoder, h5, encoder_id="resnet18-checkpoint-bench",
            tiling={"tile_um": s["tile_um"]}, batch_size=ctx["batch"],
            num_workers=ctx["workers"], device="cpu",
        )  # fmt: skip
        if data.attrs["status"] != "ok":
            raise RuntimeError(data.attrs["error"])
        return {"tiles": len(data), "bytes": h5.stat().st_size,
                "mean": mean_features(data.features.astype(np.float16))}  # fmt: skip

    return run


def job_forward(ctx: dict[str, Any]) -> Job:
    import torch

    from histodetect.features.encoder import build_encoder
    from histodetect.features.extract import encode_batch
    from histodetect.features.settings import EncoderSpec

    threads()
    spec = EncoderSpec(model="resnet18", source="checkpoint", checkpoint=ctx["weights"])
    encoder = build_encoder(spec, TILE_PX)
    encoder.net = encoder.net.to(memory_format=torch.channels_last).eval()
    batch, cpu = ctx["batch"], torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, TILE_PX, TILE_PX), dtype=torch.uint8, generator=gen)

    def run(key: str) -> dict[str, Any]:
        n = ctx["slides"][key]["n_tiles"]
        with torch.inference_mode():
            for start in range(0, n, batch):
                encode_batch(encoder, images[: min(batch, n - start)], cpu)
        return {"tiles": n}

    return run


def job_lazyslide(ctx: dict[str, Any]) -> Job:
    import lazyslide as zs
    import torch
    from lazyslide_models import TimmModel
    from torchvision.transforms import v2
    from wsidata import TileSpec, open_wsi
    from wsidata.io import add_tiles

    from histodetect.fit.data import IMAGENET_MEAN, IMAGENET_STD

    threads()
    model = TimmModel("resnet18", pretrained=False, checkpoint_path=ctx["weights"])
    transform = v2.Compose([
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ])  # fmt: skip
    out = Path(ctx["out"]) / "lazyslide"
    out.mkdir(exist_ok=True)

    def run(key: str) -> dict[str, Any]:
        s = ctx["slides"][key]
        store = out / f"{key}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        wsi = open_wsi(s["path"], store=str(store))
        xys = pd.read_parquet(s["tiles"])[["x", "y"]].to_numpy()
        spec = TileSpec.from_wsidata(wsi, TILE_PX, mpp=s["mpp"])
        add_tiles(wsi, "tiles", xys, spec, tissue_ids=np.zeros(len(xys), np.int64))
        features = zs.tl.feature_extraction(
            wsi, model, transform=transform, batch_size=ctx["batch"],
            num_workers=ctx["workers"], device="cpu", pbar=False, return_features=True,
        )  # fmt: skip
        wsi.write()
        return {"tiles": len(features), "bytes": dir_bytes(store), "mean": mean_features(features)}

    return run


def job_tiatoolbox(ctx: dict[str, Any]) -> Job:
    import torch
    import zarr
    from tiatoolbox.models.engine.deep_feature_extractor import DeepFeatureExtractor
    from tiatoolbox.models.engine.io_config import IOPatchPredictorConfig
    from tiatoolbox.models.models_abc import ModelABC

    from histodetect.fit.data import IMAGENET_MEAN, IMAGENET_STD

    threads()
    net = timm_resnet(ctx["weights"]).eval()

    class Encoder(ModelABC):
        """Our encoder behind TIAToolbox's model interface (uint8 NHWC batches in)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

        def forward(self, imgs: torch.Tensor) -> torch.Tensor:
            return self.net((imgs - self.mean) / self.std)

        @staticmethod
        def infer_batch(model: Any, batch_data: Any, *, device: str) -> list[np.ndarray]:
            x = batch_data.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
            model.eval()
            with torch.inference_mode():
                return [model(x.contiguous()).cpu().numpy()]

    extractor = DeepFeatureExtractor(
        model=Encoder(), batch_size=ctx["batch"], num_workers=ctx["workers"], device="cpu",
        verbose=False,
    )  # fmt: skip
    out = Path(ctx["out"]) / "tiatoolbox"

    def run(key: str) -> dict[str, Any]:
        s = ctx["slides"][key]
        ioconfig = IOPatchPredictorConfig(
            input_resolutions=[{"units": "mpp", "resolution": s["mpp"]}],
            patch_input_shape=(TILE_PX, TILE_PX), stride_shape=(TILE_PX, TILE_PX),
        )  # fmt: skip
        save = out / key
        shutil.rmtree(save, ignore_errors=True)
        result = extractor.run(
            images=[Path(s["path"])], masks=[Path(s["mask"])], patch_mode=False,
            ioconfig=ioconfig, save_dir=save, overwrite=True, output_type="zarr",
        )  # fmt: skip
        path = Path(next(iter(result.values())) if isinstance(result, dict) else result)
        store = zarr.open(str(path), mode="r")
        names = list(store.array_keys())
        feats = next(n for n in ("features", "probabilities") if n in names)
        features = np.asarray(store[feats][:])
        return {"tiles": len(features), "bytes": dir_bytes(path), "mean": mean_features(features)}

    return run


JOBS = {"ours": job_ours, "LazySlide": job_lazyslide, "TIAToolbox": job_tiatoolbox,
        "forward": job_forward}  # fmt: skip


def job_main(tool: str, key: str) -> None:
    """Entry point of a job's subprocess: warm once on ``key``, time it, print one JSON line."""
    run = JOBS[tool](context())
    result = timed_job(run, key, key)
    print(json.dumps(result))


# --- the parent --------------------------------------------------------------------------------


def make_weights(path: Path) -> None:
    """The encoder's weights: timm ResNet18 without its classifier, seeded random init."""
    import timm
    import torch

    torch.manual_seed(SEED)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save(net.state_dict(), path)


def prepare_slide(key: str, path: Path, out: Path) -> dict[str, Any]:
    """Our tile table of a slide (not timed), its summary and TIAToolbox's mask of it."""
    from histodetect.slides.tiling import TilingSettings, tile_slide
    from histodetect.slides.tissue import TissueSettings

    mpp = TARGET_MPP[key]
    tile_um = TILE_PX * mpp
    settings = TilingSettings(tile_um=tile_um, target_mpp=mpp, min_tissue=MIN_TISSUE,
                              tissue=TissueSettings(method="fast"))  # fmt: skip
    tiled = tile_slide(str(path), key, settings)
    tiles = tiled.tiles
    if tiles.empty or int(tiles.tile_px.iloc[0]) != TILE_PX:
        raise RuntimeError(f"{key}: {len(tiles)} tiles of {tiles.get('tile_px')} px")
    files = {"tiles": out / f"{key}.tiles.parquet", "summary": out / f"{key}.summary.json",
             "mask": out / f"{key}.mask.png"}  # fmt: skip
    tiles.to_parquet(files["tiles"], index=False)
    files["summary"].write_text(json.dumps(tiled.summary, default=str))
    write_mask(files["mask"], tiles, openslide_dims(path))
    return {"path": str(path), "mpp": mpp, "tile_um": tile_um, "n_tiles": len(tiles),
            **{k: str(v) for k, v in files.items()}}  # fmt: skip


def write_mask(path: Path, tiles: pd.DataFrame, dims: tuple[int, int]) -> None:
    """A mask of exactly the tiles (16 mask px per tile, each box shrunk by 2 px per side)."""
    from PIL import Image

    scale = int(tiles["size"].iloc[0]) / 16
    w, h = (int(np.ceil(d / scale)) for d in dims)
    mask = np.zeros((h, w, 3), np.uint8)
    for x, y in np.rint(tiles[["x", "y"]].to_numpy() / scale).astype(int):
        mask[y + 2 : y + 14, x + 2 : x + 14] = 255
    Image.fromarray(mask).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=40960, help="level-0 side of the big slide")
    parser.add_argument("--svs", type=Path, help="a real SVS (default: CMU-1-Small-Region.svs)")
    parser.add_argument("--slides", default="svs,big", help="which slides, comma-separated")
    parser.add_argument("--tools", default=",".join(TOOLS), help="which tools, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect_bench_tiling"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="loader workers of every tool")
    parser.add_argument("--cap-s", type=float, default=peer_jobs.REPEAT_BUDGET_S,
                        help="no further timed run once the timed runs took this long")  # fmt: skip
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    keys = args.slides.split(",")
    slides = {"svs": Path(args.svs or path_or_exit(CMU))}
    if "big" in keys:
        slides["big"] = work / f"big_{args.side}.tiff"
        if not slides["big"].exists():
            write_slide(slides["big"], args.side)
    out = work / "features"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    make_weights(out / "resnet18.pt")
    ctx = {"out": str(out), "weights": str(out / "resnet18.pt"), "batch": args.batch,
           "workers": args.workers,
           "slides": {k: prepare_slide(k, slides[k], out) for k in keys}}  # fmt: skip
    (out / "context.json").write_text(json.dumps(ctx, indent=1))
    os.environ["FEATURES_CONTEXT"] = str(out / "context.json")
    os.environ["PEERS_THREADS"] = str(args.threads)
    os.environ["PEERS_REPEAT_BUDGET_S"] = str(args.cap_s)
    rows: list[dict[str, Any]] = []
    for key in keys:
        for tool in args.tools.split(","):
            rows.append({"slide": key, "tool": tool, **run_job(tool, key, script=__file__)})
            print_row(rows[-1], rows)
    table = pd.DataFrame(rows).drop(columns="mean", errors="ignore")
    table.to_csv(out / "features.tsv", sep="\t", index=False)
    print_table(rows, args)
    print(" ".join(f"{key}: {ratios(rows, key)};" for key in keys))
    print(f"{ratios(rows, 'big' if 'big' in keys else keys[0])} bytes_per_tile="
          f"{bytes_per_tile(rows, 'big' if 'big' in keys else keys[0]):.0f}")  # fmt: skip


def find(rows: list[dict[str, Any]], key: str, tool: str) -> dict[str, Any] | None:
    """The row of ``tool`` on slide ``key`` if it ran."""
    return next((r for r in rows if r["slide"] == key and r["tool"] == tool and "error" not in r),
                None)  # fmt: skip


def tiles_per_s(row: dict[str, Any] | None) -> float:
    return row["tiles"] / row["seconds"] if row else float("nan")


def bytes_per_tile(rows: list[dict[str, Any]], key: str) -> float:
    ours = find(rows, key, "ours")
    return ours["bytes"] / ours["tiles"] if ours else float("nan")


def ratios(rows: list[dict[str, Any]], key: str) -> str:
    """Ours over the network alone and over the best peer (tiles/s) on slide ``key``."""
    ours = tiles_per_s(find(rows, key, "ours"))
    peers_ = [tiles_per_s(r) for r in rows if r["slide"] == key and r["tool"] not in NOT_PEERS
              and "error" not in r]  # fmt: skip
    best = max(peers_, default=float("nan"))
    forward = tiles_per_s(find(rows, key, "forward"))
    return f"features_vs_forward={ours / forward:.2f} features_vs_best_peer={ours / best:.2f}"


def print_row(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """One line: time, tiles (and the gap to ours), tiles/s, bytes per tile, feat_diff, RSS."""
    head = f"{row['slide']:<4} {row['tool']:<11}"
    if "error" in row:
        print(f"{head} did not run: {row['error']}", flush=True)
        return
    ours = find(rows, row["slide"], "ours")
    gap, diff = "", "        -"
    if ours and row["tool"] not in NOT_PEERS:
        rel = row["tiles"] / ours["tiles"] - 1
        gap = f"  tiles {rel:+.0%} vs ours ({ours['tiles']})" if abs(rel) > 0.05 else ""
    if ours and "mean" in row:
        a, b = np.asarray(row["mean"]), np.asarray(ours["mean"])
        diff = f"{np.abs(a - b).max() / np.abs(b).max():9.1e}"
    size = f"{row['bytes'] / row['tiles']:8.0f} B/tile" if "bytes" in row else "       - B/tile"
    print(
        f"{head} {row['seconds']:7.2f} s {row['tiles']:6d} tiles {tiles_per_s(row):7.1f} tiles/s "
        f"{size} feat_diff {diff} {row['rss_mb']:6.0f} MB median of {row['runs']}{gap}",
        flush=True,
    )


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The whole table again, the peers that did not install and the notes."""
    print(f"\n== {args.threads} threads for every tool (OMP/MKL/OpenBLAS/numba, torch), batch "
          f"{args.batch}, {args.workers} loader worker(s) each; ResNet18, 224 px tiles; svs = "
          "the real SVS at 0.5 um/px, big = the 40,960 px TIFF at 4 um/px ==")  # fmt: skip
    for row in rows:
        print_row(row, rows)
    failed = Path(sys.executable).parent.parent / "peers_failed.txt"
    if failed.exists() and failed.read_text().split():
        print(f"did not install: {', '.join(failed.read_text().split())}")
    for tool, note in NOTES.items():
        print(f"note {tool}: {note}")


if __name__ == "__main__":
    os.environ.setdefault("FAST_DISABLE_LOGGING", "1")
    if len(sys.argv) > 2 and sys.argv[1] == "--job":
        peer_jobs.REPEAT_BUDGET_S = float(os.environ["PEERS_REPEAT_BUDGET_S"])
        job_main(sys.argv[2], sys.argv[3])
    else:
        main()
