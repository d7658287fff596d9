"""Tile datasets, loaders and batch augmentations for training and inference."""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from histodetect.errors import InputError
from histodetect.fit.stain import hed_jitter
from histodetect.slides.reader import SlideReader
from histodetect.slides.threads import map_on_threads, threads_per_worker

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
READ_COLUMNS = ["path", "x", "y", "level", "read_px", "tile_px"]
IMAGE_COLUMNS = ["path", "tile_px"]

Transform = Callable[[torch.Tensor], torch.Tensor]
TileTransform = Callable[[np.ndarray], np.ndarray]


class TileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Square tiles read from whole-slide images or image files, one row of ``df`` per item.

    A table with slide geometry (``x``, ``y``, ``level``, ``read_px``, ``tile_px``) is read
    from slides; a table without ``x`` is a folder of patches: each ``path`` is an image file
    resized to ``tile_px``. Items are ``(image, label)``: ``image`` is a uint8 CHW tensor (or a
    float tensor normalised with ImageNet statistics when ``normalize``), ``label`` a float
    scalar (0 when ``df`` has no ``label`` column). ``transform`` (e.g. a
    :class:`~histodetect.fit.stain.StainNormalizer`) maps each RGB uint8 HWC tile before that.
    Slides are opened lazily, at most ``max_open`` per process, and never pickled, so each
    DataLoader worker owns its handles. A DataLoader fetches a batch at once
    (``__getitems__``): each slide's tiles of the batch through
    :meth:`~histodetect.slides.reader.SlideReader.read_tiles` on ``threads`` threads (image
    files decoded on them too), the same items as one by one.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        normalize: bool = False,
        max_open: int = 32,
        transform: TileTransform | None = None,
        threads: int = 1,
    ) -> None:
        self.images = "x" not in df.columns
        needed = IMAGE_COLUMNS if self.images else READ_COLUMNS
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise KeyError(f"tile table lacks columns {missing}")
        self.paths = df["path"].astype(str).to_numpy()
        if self.images:
            self.coords = np.zeros((len(df), 5), np.int64)
            self.coords[:, 4] = df["tile_px"].to_numpy(np.int64)
        else:
            self.coords = df[["x", "y", "level", "read_px", "tile_px"]].to_numpy(np.int64)
        self.transform = transform
        labels = df["label"].to_numpy(np.float32) if "label" in df.columns else None
        self.labels = labels if labels is not None else np.zeros(len(df), np.float32)
        self.normalize = normalize
        self.max_open = max_open
        self.threads = threads
        self._batch: dict[int, np.ndarray] = {}  # tiles read ahead for the batch being made
        self._slides: OrderedDict[str, SlideReader] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_slides"] = OrderedDict()
        state["_batch"] = {}
        return state

    def _slide(self, path: str) -> SlideReader:
        if self._pid != os.getpid():  # forked worker: never reuse the parent's handles
            self._slides, self._pid = OrderedDict(), os.getpid()
        slide = self._slides.get(path)
        if slide is None:
            slide = SlideReader(path)
            self._slides[path] = slide
            if len(self._slides) > self.max_open:
                self._slides.popitem(last=False)[1].close()
        else:
            self._slides.move_to_end(path)
        return slide

    def read_tile(self, i: int) -> np.ndarray:
        """Return tile ``i`` as an RGB uint8 HWC array of side ``tile_px``."""
        tile = self._batch.get(i)
        if tile is None:
            tile = self._read_image(i) if self.images else self._read_region(i)
        return tile if self.transform is None else self.transform(tile)

    def _read_image(self, i: int) -> np.ndarray:
        tile_px = int(self.coords[i, 4])
        try:
            with Image.open(self.paths[i]) as image:
                image.draft("RGB", (tile_px, tile_px))  # JPEG: decode at a reduced scale
                rgb = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise InputError(self.paths[i], f"cannot read image ({err})") from err
        if rgb.size != (tile_px, tile_px):
            down = min(rgb.size) > tile_px
            rgb = rgb.resize(
                (tile_px, tile_px), Image.Resampling.BOX if down else Image.Resampling.BILINEAR
            )
        return np.asarray(rgb)

    def _read_region(self, i: int) -> np.ndarray:
        x, y, level, read_px, tile_px = (int(v) for v in self.coords[i])
        return self._slide(self.paths[i]).read_tile(x, y, level, read_px, tile_px)

    def _prefetch(self, indices: list[int]) -> dict[int, np.ndarray]:
        """The untransformed tiles of ``indices``, read on ``threads`` threads: image files one
        per thread, each slide's tiles through one ``read_tiles``."""
        unique = list(dict.fromkeys(indices))
        if self.images:
            read = map_on_threads(self._read_image, unique, self.threads)
            return dict(zip(unique, read, strict=True))
        by_slide: dict[str, list[int]] = {}
        for i in unique:
            by_slide.setdefault(self.paths[i], []).append(i)
        tiles: dict[int, np.ndarray] = {}
        for path, rows in by_slide.items():
            read = self._slide(path).read_tiles(self.coords[rows], threads=self.threads)
            tiles.update(zip(rows, read, strict=True))
        return tiles

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.read_tile(i).copy()).permute(2, 0, 1).contiguous()
        if self.normalize:
            image = normalize_batch(image[None])[0]
        return image, torch.tensor(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch's items (what a DataLoader asks for): its tiles read at once, then
        ``self[i]`` of each index, whose :meth:`read_tile` takes the tile read for it."""
        indices = [int(i) for i in indices]
        self._batch = self._prefetch(indices)
        try:
            return [self[i] for i in indices]
        finally:
            self._batch = {}


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


def random_crop(
    x: torch.Tensor, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random ``size`` x ``size`` square of each image of an NCHW batch (offsets per sample).

    Training on crops of whole tiles keeps the pixel scale (unlike a resize) and costs what a
    ``size`` px tile costs; a network with global pooling then scores whole tiles at inference.
    """
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop of {size} px is larger than the {h} x {w} px tiles")
    if size == h == w:
        return x
    oy = torch.randint(0, h - size + 1, (x.shape[0],), generator=generator).tolist()
    ox = torch.randint(0, w - size + 1, (x.shape[0],), generator=generator).tolist()
    return torch.stack(
        [im[:, a : a + size, b : b + size] for im, a, b in zip(x, oy, ox, strict=True)]
    )


def mixup(
    x: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Blend each image with another of the batch: ``lam * x + (1 - lam) * x[perm]``.

    ``lam`` is drawn from Beta(``alpha``, ``alpha``); returns the blend, ``perm`` and ``lam``,
    so that the loss is ``lam * loss(y) + (1 - lam) * loss(y[perm])``.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be positive, not {alpha}")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def augment_batch(
    x: torch.Tensor,
    *,
    colour_jitter: float = 0.1,
    generator: torch.Generator | None = None,
    jitter_space: str = "hsv",
) -> torch.Tensor:
    """Random D4 symmetry and mild colour jitter, per sample, on a float NCHW batch in [0, 1].

    ``jitter_space="hsv"``, amplitude ``colour_jitter`` ``s``: brightness and contrast factors
    in ``[1 - s, 1 + s]``, saturation in ``[1 - 2s, 1 + 2s]``, hue rotation ``±s * 90°``.
    ``"hed"``: stain concentrations scaled and shifted (:func:`histodetect.fit.stain.hed_jitter`).
    Random numbers come from ``generator`` (CPU) so that runs are reproducible.
    """
    if jitter_space not in ("hsv", "hed"):
        raise ValueError(f"jitter_space must be 'hsv' or 'hed', not {jitter_space!r}")
    n = x.shape[0]
    out = torch.empty_like(x)
    choice = torch.randint(0, 8, (n,), generator=generator)
    for k, transform in enumerate(d4_transforms()):
        idx = (choice == k).nonzero().flatten().to(x.device)
        if idx.numel():
            out[idx] = transform(x[idx])
    if colour_jitter <= 0:
        return out
    if jitter_space == "hed":
        return hed_jitter(out, colour_jitter, generator)
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
    weights: np.ndarray | None = None,
    transform: TileTransform | None = None,
    threads: int | None = None,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """DataLoader over a tile table with seeded shuffling and worker seeds.

    ``threads`` (None: the cores this process has) read the tiles, split between the
    ``num_workers`` reading processes (the main process when 0): one reader per worker, never
    more threads than that in all (:func:`~histodetect.slides.threads.threads_per_worker`).

    Without shuffling (inference) rows are kept in ``df`` order: sort ``df`` by slide
    first so each worker reads one slide at a time. ``weights`` (one per row) draw
    ``round(sum(weights))`` rows per epoch with replacement (WeightedRandomSampler) instead
    of shuffling (see :func:`histodetect.cohort.sampling.weight_tiles`).
    ``loader.generator`` may be reseeded before an epoch to make its order (and the weighted
    draw) independent of the previous epochs.
    """
    generator = torch.Generator().manual_seed(seed)
    if weights is not None:
        w = torch.tensor(np.array(weights, np.float64))
        if len(w) != len(df) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sampling weights must be finite, >= 0, not all 0, one per tile")
        n = max(1, round(float(w.sum())))
        sampler = WeightedRandomSampler(w, n, replacement=True, generator=generator)
    return DataLoader(
        TileDataset(
            df,
            normalize=normalize,
            transform=transform,
            threads=threads_per_worker(threads, num_workers),
        ),
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
