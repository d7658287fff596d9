"""Encode every tissue tile of a slide once: batched, reads overlapping the forward pass."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

import histodetect
from histodetect.errors import InputError
from histodetect.features.encoder import Encoder
from histodetect.features.store import SlideFeatures, write_features
from histodetect.fit.data import make_loader, prepare_batch, slide_order
from histodetect.fit.model import resolve_device

log = logging.getLogger(__name__)


def encode_batch(encoder: Encoder, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Features of a uint8 NCHW batch: resized to the encoder's input, normalised, forward.

    channels_last always (faster with oneDNN too); on CUDA under autocast (bfloat16 where
    supported, else float16). Returns float32 on the CPU.
    """
    x = prepare_batch(x, device, mean=encoder.mean, std=encoder.std, channels_last=True)
    if x.shape[-1] != encoder.input_px:
        size = (encoder.input_px, encoder.input_px)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx: Any = nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        ctx = torch.autocast("cuda", dtype=dtype)
    with ctx:
        return encoder.net(x).float().cpu()


def extract_features(
    tiles: pd.DataFrame,
    encoder: Encoder,
    *,
    batch_size: int = 128,
    num_workers: int = 1,
    device: str = "auto",
) -> np.ndarray:
    """Features of every row of ``tiles`` (a tile table with ``path``), in its order.

    A table without ``x`` is a folder of patches (each ``path`` an image, resized to
    ``tile_px``), read in its own order. Slide tiles are read in raster order by ``num_workers`` processes (each with its own slide
    handles) while the encoder runs on the batches before, so reading and decoding overlap
    the forward pass. Returns float32, shape ``(len(tiles), encoder.dim)``.
    """
    dev = resolve_device(device)
    net = encoder.net.to(dev).to(memory_format=torch.channels_last).eval()
    encoder.net = net
    out = np.empty((len(tiles), encoder.dim), np.float32)
    if tiles.empty:
        return out
    order = slide_order(tiles) if "x" in tiles else np.arange(len(tiles))
    loader = make_loader(tiles.iloc[order], batch_size, num_workers, False, 0)
    start = 0
    with torch.inference_mode():
        for images, _ in tqdm(loader, desc="features", file=sys.stderr, mininterval=5.0):
            rows = order[start : start + len(images)]
            out[rows] = encode_batch(encoder, images, dev).numpy()
            start += len(images)
    return out


def with_context(features: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Each tile's features beside the mean of its tissue neighbours' (8-connected on the
    slide's tile grid; its own when it has none): ``(n, 2 * dim)`` float32. Memory: the
    features twice and one int index per grid cell."""
    x = np.asarray(features, np.float32)
    if not len(x):
        return np.empty((0, 2 * x.shape[1]), np.float32)
    r, c = row - row.min() + 1, col - col.min() + 1  # a border of one cell: no index falls off
    index = np.full((int(r.max()) + 2, int(c.max()) + 2), -1, np.int64)
    index[r, c] = np.arange(len(x))
    total, count = np.zeros_like(x), np.zeros(len(x), np.float32)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near = index[r + dr, c + dc]
            found = (near >= 0) & bool(dr or dc)
            total[found] += x[near[found]]
            count += found
    around = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], x)
    return np.concatenate([x, around], 1)


def extract_slide(
    tiles: pd.DataFrame,
    summary: dict[str, Any],
    encoder: Encoder,
    out: str | Path,
    *,
    encoder_id: str,
    tiling: dict[str, Any],
    bad_slides: str = "exclude",
    **options: Any,
) -> SlideFeatures:
    """Extract one slide's features and write them to ``out`` (h5, atomically).

    A slide whose tiling failed, or whose tiles cannot be read (with ``bad_slides:
    exclude``), gets a file with no rows, ``status = failed`` and the error, so that the
    other slides go on and every reader refuses it by name; ``fail`` raises instead.
    """
    slide_id = str(summary["slide_id"])
    attrs: dict[str, Any] = {
        "slide_id": slide_id,
        "status": "ok",
        "error": "",
        "encoder_id": encoder_id,
        "settings_hash": encoder_id.rsplit("-", 1)[-1],
        **encoder.attrs(),
        "tile_um": float(tiling["tile_um"]),
        "histodetect_version": histodetect.__version__,
    }
    if not tiles.empty:
        first = tiles.iloc[0]
        attrs |= {"tile_px": int(first["tile_px"]), "size0": int(first["size"])}
        attrs |= {"stride0": int(first["stride"]), "mpp": float(first["mpp"])}
    context = encoder.spec.context == "neighbours"
    attrs["context"] = encoder.spec.context
    features = np.empty((0, encoder.dim * (2 if context else 1)), np.float32)
    if summary.get("status") == "failed":
        attrs |= {"status": "failed", "error": f"tiling failed: {summary.get('error')}"}
        tiles = tiles.iloc[:0]
    else:
        t0 = time.perf_counter()
        try:
            features = extract_features(tiles.assign(path=summary["path"]), encoder, **options)
            if context:  # the tissue around each tile, from the whole slide's grid
                features = with_context(features, tiles["row"].to_numpy(), tiles["col"].to_numpy())
        except InputError as err:
            if bad_slides == "fail":
                raise
            log.error("extract_features: %s (slide %s left out)", err, slide_id)
            attrs |= {"status": "failed", "error": err.cause}
            tiles, features = tiles.iloc[:0], features[:0]
        else:
            rate = len(tiles) / max(time.perf_counter() - t0, 1e-9)
            log.info(
                "%s: %d tiles, %d features each, %.1f tiles/s", slide_id, *features.shape, rate
            )
    data = SlideFeatures(
        features,
        tiles[["x", "y"]].to_numpy(np.int64),
        attrs,
        {"row": tiles["row"].to_numpy(np.int64), "col": tiles["col"].to_numpy(np.int64)}
        | {"tissue": tiles["tissue"].to_numpy(np.float32)},
    )
    write_features(out, data)
    return data
