"""The inference jobs of ``bench/peers.py``: tissue, tiles and one ResNet18 over every tile.

Ours (``tile_slide`` + ``predict_tile_classes`` + ``heatmap_from_tiles``), WSInfer's CLI with the
same network as TorchScript, TIAToolbox's ``PatchPredictor`` with the same network behind its
model interface, and ``forward``: the network alone on as many tiles as ours scored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from peer_jobs import timed_job, warm_slide
from tiling import MPP, TILE

INFER_MPP = {"big": 8 * MPP, "svs": MPP}
"""Resolution of the inference grid per slide (the big slide's level 3; the SVS's level 0)."""
INFER_MIN_TISSUE = 0.01
"""Tissue fraction of the inference grid's tiles (WSInfer and TIAToolbox keep every patch
that touches tissue; the big slide's mirrored pattern puts about half of each 1 mm tile in
tissue, so 0.5 would keep a few tiles only)."""


def make_models(out: Path, batch: int) -> dict[str, Path]:
    """One ResNet18 (seeded weights), saved for ours, as TorchScript + config for WSInfer."""
    import torch

    from histodetect.fit.model import build_model, save_model

    torch.manual_seed(0)
    net = build_model("resnet18").eval()
    ours = out / "resnet18.pt"
    save_model(ours, net, {"tile_px": TILE})
    scripted = out / "resnet18.torchscript.pt"
    torch.jit.script(net).save(str(scripted))
    return {"ours": ours, "torchscript": scripted}


def wsinfer_config(out: Path, mpp: float) -> Path:
    from histodetect.fit.data import IMAGENET_MEAN, IMAGENET_STD

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

    from histodetect.fit.data import prepare_batch
    from histodetect.fit.model import load_model

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

    from histodetect.fit.model import load_model

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


def infer_mpp(path: str) -> float:
    """Resolution of the inference grid: :data:`INFER_MPP` of the SVS or of the big slide."""
    return INFER_MPP["svs" if path == str(warm_slide()) else "big"]
