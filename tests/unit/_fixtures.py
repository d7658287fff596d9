"""Helpers for the training/inference tests: tiny tiled TIFF slides and tile tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from histodetect.fit.model import build_model, save_model

SLIDE_PX = 1024
GRID_TILE = 64
RED = (200, 30, 40)
BLUE = (40, 60, 190)


def write_tiff(path: Path, image: np.ndarray, tile: int = 256) -> Path:
    """Write an RGB uint8 image as a lossless tiled TIFF that OpenSlide opens."""
    tifffile.imwrite(path, image, tile=(tile, tile), compression="zlib", photometric="rgb")
    return path


def colour_slide(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Slide of 16x16 tiles of 64 px, each noisy red (label 1) or blue (label 0)."""
    rng = np.random.default_rng(seed)
    n = SLIDE_PX // GRID_TILE
    labels = rng.integers(0, 2, (n, n))
    colours = np.where(labels[..., None] == 1, RED, BLUE).astype(np.int16)
    image = np.repeat(np.repeat(colours, GRID_TILE, 0), GRID_TILE, 1)
    image = image + rng.integers(-25, 26, image.shape)
    return write_tiff(path, np.clip(image, 0, 255).astype(np.uint8)), labels


def tile_table(path: Path, labels: np.ndarray, tile_px: int = 32) -> pd.DataFrame:
    """Tile table of a :func:`colour_slide` (read at level 0, 64 px, resized to ``tile_px``)."""
    rows, cols = np.indices(labels.shape)
    rows, cols = rows.ravel(), cols.ravel()
    return pd.DataFrame(
        {
            "slide_id": Path(path).stem,
            "path": str(path),
            "x": cols * GRID_TILE,
            "y": rows * GRID_TILE,
            "size": GRID_TILE,
            "row": rows,
            "col": cols,
            "level": 0,
            "read_px": GRID_TILE,
            "tile_px": tile_px,
            "tissue": 1.0,
            "label": labels.ravel(),
        }
    )


def random_model(
    path: Path,
    seed: int,
    tile_px: int = 32,
    backbone: str = "test_efficientnet",
    **meta: object,
) -> Path:
    """Save a randomly initialised model file (``meta``: more entries of its record)."""
    import torch

    torch.manual_seed(seed)
    model = build_model(backbone, hidden=16, dropout=0.0)
    save_model(path, model, {"tile_px": tile_px, **meta})
    return path
