"""Tile datasets, loaders and batch augmentations for training and inference."""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import openslide
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
READ_COLUMNS = ["path", "x", "y", "level", "read_px", "tile_px"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class TileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Square tiles read from whole-slide images, one row of ``df`` per item.

    Items are ``(image, label)``: ``image`` is a uint8 CHW tensor (or a float tensor
    normalised with ImageNet statistics when ``normalize``), ``label`` a float scalar
    (0 when ``df`` has no ``label`` column). Slides are opened lazily, at most
    ``max_open`` per process, and never pickled, so each DataLoader worker owns its handles.
    """

    def __init__(self, df: pd.DataFrame, *, normalize: bool = False, max_open: int = 32) -> None:
        missing = [c for c in READ_COLUMNS if c not in df.columns]
        if missing:
            raise KeyError(f"tile table lacks columns {missing}")
        self.paths = df["path"].astype(str).to_numpy()
        self.coords = df[["x", "y", "level", "read_px", "tile_px"]].to_numpy(np.int64)
        labels = df["label"].to_numpy(np.float32) if "label" in df.columns else None
        self.labels = labels if labels is not None else np.zeros(len(df), np.float32)
        self.normalize = normalize
        self.max_open = max_open
        self._slides: OrderedDict[str, openslide.OpenSlide] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_slides"] = OrderedDict()
        return state

    def _slide(self, path: str) -> openslide.OpenSlide:
        if self._pid != os.getpid():  # forked worker: never reuse the parent's handles
            self._slides, self._pid = OrderedDict(), os.getpid()
        slide = self._slides.get(path)
        if slide is None:
            slide = openslide.OpenSlide(path)
            self._slides[path] = slide
            if len(self._slides) > self.max_open:
                self._slides.popitem(last=False)[1].close()
        else:
            self._slides.move_to_end(path)
        return slide

    def read_tile(self, i: int) -> np.ndarray:
        """Return tile ``i`` as an RGB uint8 HWC array of side ``tile_px``."""
        x, y, level, read_px, tile_px = (int(v) for v in self.coords[i])
        region = self._slide(self.paths[i]).read_region((x, y), level, (read_px, read_px))
        rgb = Image.new("RGB", region.size, (255, 255, 255))
        rgb.paste(region, mask=region.getchannel("A"))
        if read_px != tile_px:
            resample = Image.Resampling.BOX if read_px > tile_px else Image.Resampling.BILINEAR
            rgb = rgb.resize((tile_px, tile_px), resample)
        return np.asarray(rgb)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.read_tile(i).copy()).permute(2, 0, 1).contiguous()
        if self.normalize:
            image = normalize_batch(image[None])[0]
        return image, torch.tensor(self.labels[i])


def normalize_batch(
    x: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Normalise an NCHW batch (uint8, or float in [0, 1]) channel-wise."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def prepare_batch(
    x: torch.Tensor,
    device: torch.device,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    channels_last: bool = False,
    augment: Transform | None = None,
) -> torch.Tensor:
    """Move a uint8 NCHW batch to ``device``, augment it in [0, 1], then normalise it."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if augment is not None:
        x = augment(x)
    x = normalize_batch(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def d4_transforms() -> list[Transform]:
    """The 8 symmetries of the square as NCHW batch transforms (identity first)."""

    def make(k: int, flip: bool) -> Transform:
        def transform(x: torch.Tensor) -> torch.Tensor:
            x = x.flip(-1) if flip else x
            return torch.rot90(x, k, dims=(-2, -1)) if k else x

        return transform

    return [make(k, flip) for flip in (False, True) for k in range(4)]


def augment_batch(
    x: torch.Tensor, *, colour_jitter: float = 0.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random D4 symmetry and mild colour jitter, per sample, on a float NCHW batch in [0, 1].

    Jitter amplitude ``colour_jitter`` ``s``: brightness and contrast factors in
    ``[1 - s, 1 + s]``, saturation in ``[1 - 2s, 1 + 2s]``, hue rotation ``±s * 90°``.
    Random numbers come from ``generator`` (CPU) so that runs are reproducible.
    """
    n = x.shape[0]
    out = torch.empty_like(x)
    choice = torch.randint(0, 8, (n,), generator=generator)
    for k, transform in enumerate(d4_transforms()):
        idx = (choice == k).nonzero().flatten().to(x.device)
        if idx.numel():
            out[idx] = transform(x[idx])
    if colour_jitter <= 0:
        return out
    u = (torch.rand((4, n), generator=generator) * 2 - 1).to(x.device, x.dtype)
    shape = (n, 1, 1, 1)
    out = out * (1 + colour_jitter * u[0]).view(shape)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = mean + (out - mean) * (1 + colour_jitter * u[1]).view(shape)
    out = _hue_saturation(out, 1 + 2 * colour_jitter * u[2], colour_jitter * u[3] * math.pi / 2)
    return out.clamp_(0, 1)


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_saturation(x: torch.Tensor, sat: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Scale chroma by ``sat`` and rotate hue by ``hue`` radians in YIQ space, per sample."""
    fwd = _RGB2YIQ.to(x.device, x.dtype)
    inv = torch.linalg.inv(fwd)
    cos, sin = torch.cos(hue) * sat, torch.sin(hue) * sat
    rot = torch.zeros((x.shape[0], 3, 3), device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mat = inv @ rot @ fwd
    return torch.einsum("nij,njhw->nihw", mat, x)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002  (global RNG used by third-party code)
    random.seed(seed)


def make_loader(
    df: pd.DataFrame,
    batch_size: int,
    num_workers: int,
    shuffle: bool,
    seed: int,
    sampler: Sampler[int] | None = None,
    *,
    drop_last: bool = False,
    normalize: bool = False,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """DataLoader over a tile table with seeded shuffling and worker seeds.

    Without shuffling (inference) rows are kept in ``df`` order: sort ``df`` by slide
    first so each worker reads one slide at a time. ``loader.generator`` may be reseeded
    before an epoch to make its order independent of the previous epochs.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TileDataset(df, normalize=normalize),
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )


def slide_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions of ``df`` grouped by slide, then in raster order (for inference reads)."""
    keys = [df[c].to_numpy() for c in ("x", "y", "level")] + [df["path"].astype(str).to_numpy()]
    return np.lexsort(keys)
