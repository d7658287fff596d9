"""Ensemble tile inference (one read of the tiles, every fold model per batch) and heatmaps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from histodetect.detection.heatmap import Heatmap
from histodetect.errors import InputError, name_some
from histodetect.fit.data import d4_transforms, make_loader, prepare_batch, slide_order
from histodetect.fit.model import load_model, read_model_meta, resolve_device
from histodetect.fit.stain import StainNormalizer
from histodetect.training.calibration import Calibration

log = logging.getLogger(__name__)
REDUCERS = ("mean", "median", "max")


def load_ensemble(
    model_paths: list[Path], device: torch.device
) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """Load fold models (and their metadata) and check that they read tiles the same way."""
    if not model_paths:
        raise ValueError("no model files given")
    models, metas = zip(*(load_model(p, device) for p in model_paths), strict=True)
    ref = metas[0]
    for path, meta in zip(model_paths, metas, strict=True):
        for key in ("tile_px", "mean", "std", "stain_norm"):
            if list(np.atleast_1d(meta.get(key))) != list(np.atleast_1d(ref.get(key))):
                raise ValueError(
                    f"{path} has {key}={meta.get(key)} but {model_paths[0]} has {ref.get(key)}: "
                    "ensemble models must share tile_px, normalisation and stain normalisation"
                )
    return list(models), list(metas)


def model_resolution(tiling: dict[str, Any]) -> tuple[float, float]:
    """Tile side (um) and resolution (um/px) of a tiling config (``target_mag`` wins)."""
    mag = tiling.get("target_mag")
    mpp = 10.0 / float(mag) if mag else float(tiling["target_mpp"])
    return float(tiling["tile_um"]), mpp


def check_tiling(model_paths: list[Path], tiling: dict[str, Any]) -> None:
    """Refuse models trained on tiles of another size or resolution than ``tiling`` makes.

    Raises:
        InputError: naming the model file, what it was trained at and what the config tiles.
    """
    want = model_resolution(tiling)
    for path in model_paths:
        meta = read_model_meta(path)
        if "tiling" not in meta:
            raise InputError(path, "the model does not record its tiling (trained before 0.2)")
        have = model_resolution(meta["tiling"])
        if not np.allclose(have, want, rtol=1e-6):
            raise InputError(
                path,
                f"trained on {have[0]:g} um tiles at {have[1]:g} um/px but tiling makes "
                f"{want[0]:g} um tiles at {want[1]:g} um/px: set tiling.tile_um and "
                "tiling.target_mpp to the model's",
            )


def out_of_fold_model(
    model_paths: list[Path], folds: pd.DataFrame, slide_id: str, source: str | Path
) -> Path:
    """The fold model that did not train on ``slide_id``'s patient, checked against the model.

    ``folds`` (``slide_id, patient_id, fold``) names the slide's fold; the model of that fold
    must exist and must not list the patient among the patients it trained on.

    Raises:
        InputError: naming ``source`` (the fold table) when the slide has no fold, or when the
            model of its fold trained on its patient (a fold table that does not match the
            models).
    """
    row = folds.loc[folds["slide_id"].astype(str) == str(slide_id)]
    if row.empty or pd.isna(row["fold"].iloc[0]):
        raise InputError(source, f"slide {slide_id} has no fold")
    fold, patient = int(row["fold"].iloc[0]), str(row["patient_id"].iloc[0])
    for path in model_paths:
        meta = read_model_meta(path)
        if int(meta.get("fold", -1)) != fold:
            continue
        trained = meta.get("train_patients")
        if trained is None or patient in trained:
            why = "does not list its training patients" if trained is None else "trained on it"
            raise InputError(
                source,
                f"slide {slide_id} (patient {patient}) is in fold {fold}, but {path} {why}: "
                "no out-of-fold heatmap from it",
            )
        return Path(path)
    raise InputError(source, f"slide {slide_id} is in fold {fold}, which has no model")


def predict_tiles(tiles_df: pd.DataFrame, model_paths: list[Path], **options: Any) -> np.ndarray:
    """Ensemble lesion probability of each tile, in the order of ``tiles_df``.

    The first value of :func:`predict_tile_classes`, which takes the same ``options``
    (``batch_size``, ``num_workers``, ``tta``, ``reduce``, ``device``).
    """
    return predict_tile_classes(tiles_df, model_paths, **options)[0]


def predict_tile_classes(
    tiles_df: pd.DataFrame,
    model_paths: list[Path],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    tta: bool = False,
    reduce: str = "mean",
    device: str = "auto",
    calibrations: Sequence[Calibration] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Ensemble lesion probability of each tile and, for multi-class models, of each class.

    Tiles are read once, grouped by slide (``num_workers`` reading processes, each with its
    own slide handles); every model scores each batch, so memory is bounded by the batch.
    With ``calibrations`` (one per model, as the workflow reads them beside the models:
    :func:`~histodetect.training.calibration.read_calibration`) each model's logits are
    calibrated first, so the models are combined on calibrated probabilities; without, raw. A model's lesion probability is the sigmoid of its
    calibrated logit, or one minus the softmax of the background class (label 0) for
    multi-class models. With ``tta`` the 8 D4 symmetries are
    applied on the device and averaged per model; the models are then combined with
    ``reduce`` (mean, median or max). Tiles get the stain normalisation the models were
    trained with. Tensors are channels_last; on CUDA under autocast (bfloat16 where supported).

    Returns:
        ``(lesion, by_class)``: the lesion probability, shape ``(n,)``, and, when every model
        is multi-class with the same classes, ``class name -> probability`` (softmax, each
        class reduced over the models on its own) in the models' class order; else ``{}``.
    """
    if reduce not in REDUCERS:
        raise ValueError(f"reduce must be one of {REDUCERS}, not {reduce!r}")
    dev = resolve_device(device)
    models, metas = load_ensemble([Path(p) for p in model_paths], dev)
    calibrations = list(calibrations or [Calibration()] * len(models))
    if len(calibrations) != len(models):
        raise ValueError(f"{len(calibrations)} calibrations for {len(models)} models")
    meta = metas[0]
    tile_px = set(tiles_df["tile_px"].unique().tolist())
    if tile_px - {meta["tile_px"]}:
        raise ValueError(
            f"tiles have tile_px {name_some(sorted(tile_px))} but models expect {meta['tile_px']}"
        )
    order = slide_order(tiles_df)
    stain = None
    if meta.get("stain_norm"):
        reference = (meta.get("config") or {}).get("stain_reference")
        stain = StainNormalizer(meta["stain_norm"], reference)
    loader = make_loader(tiles_df.iloc[order], batch_size, num_workers, False, 0, transform=stain)
    multiclass = [m.get("loss") == "ce" for m in metas]
    names = [list(m.get("classes") or []) for m in metas]
    per_class = all(multiclass) and all(n == names[0] for n in names) and len(names[0]) > 1
    cuda = dev.type == "cuda"
    models = [m.to(memory_format=torch.channels_last) for m in models]  # faster on CPU too
    transforms = d4_transforms() if tta else d4_transforms()[:1]
    out = np.empty(len(tiles_df), np.float32)
    by_class = np.empty((len(tiles_df), len(names[0]) if per_class else 0), np.float32)
    start = 0
    norm = {"mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    with torch.inference_mode():
        for images, _ in tqdm(loader, desc="tiles", file=sys.stderr, mininterval=5.0):
            x = prepare_batch(images, dev, channels_last=True, **norm)
            probs = [
                _score(m, x, transforms, cuda, mc, cal)
                for m, mc, cal in zip(models, multiclass, calibrations, strict=True)
            ]
            lesion = torch.stack(
                [1 - p[:, 0] if mc else p[:, 0] for p, mc in zip(probs, multiclass, strict=True)]
            )
            rows = order[start : start + len(x)]
            out[rows] = _reduce(lesion, reduce).cpu().numpy()
            if per_class:
                by_class[rows] = _reduce(torch.stack(probs), reduce).cpu().numpy()
            start += len(x)
    return out, {str(c): by_class[:, k] for k, c in enumerate(names[0])} if per_class else {}


def _score(
    model: nn.Module,
    x: torch.Tensor,
    transforms: list[Any],
    amp: bool,
    multiclass: bool,
    calibration: Calibration,
) -> torch.Tensor:
    """Calibrated class probabilities (softmax) or lesion probability (sigmoid, one column)
    of one model, averaged over ``transforms``: shape ``(N, classes)`` or ``(N, 1)``."""
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    ctx = torch.autocast("cuda", dtype=dtype) if amp else nullcontext()
    total: torch.Tensor | float = 0.0
    for transform in transforms:
        with ctx:
            logits = model(transform(x)).float()
        total = total + calibration.probs_from_logits(logits, multiclass)
    return total / len(transforms)  # type: ignore[return-value]


def _reduce(probs: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return probs.mean(0)
    if how == "median":
        return probs.median(0).values
    return probs.max(0).values


def heatmap_from_tiles(
    tiles_df: pd.DataFrame,
    probs: np.ndarray,
    *,
    slide_id: str,
    mpp: float,
    level: int,
    slide_width: int,
    slide_height: int,
) -> Heatmap:
    """Place tile probabilities on the grid given by the ``row``/``col`` columns.

    The tile side is the tiles' (single) ``size`` and the grid step their ``stride`` (``size``
    when the table has no ``stride`` column); the origin is (0, 0) and cells without a tile
    are NaN.
    """
    probs = np.asarray(probs, np.float32)
    if len(probs) != len(tiles_df):
        raise ValueError(f"{len(probs)} probabilities for {len(tiles_df)} tiles")
    if tiles_df.empty:
        return Heatmap(
            slide_id, np.full((0, 0), np.nan, np.float32), 0.0, 0.0, 1.0, 1.0, mpp, level,
            slide_width, slide_height,
        )  # fmt: skip
    sizes = tiles_df["size"].unique()
    if len(sizes) != 1:
        raise ValueError(
            f"tiles of one slide must share one size, found {name_some(sorted(sizes))}"
        )
    strides = tiles_df["stride"].unique() if "stride" in tiles_df.columns else sizes
    if len(strides) != 1:
        raise ValueError(
            f"tiles of one slide must share one stride, found {name_some(sorted(strides))}"
        )
    rows, cols = tiles_df["row"].to_numpy(int), tiles_df["col"].to_numpy(int)
    grid = np.full((rows.max() + 1, cols.max() + 1), np.nan, np.float32)
    grid[rows, cols] = probs
    size, stride = float(sizes[0]), float(strides[0])
    return Heatmap(
        slide_id, grid, 0.0, 0.0, stride, size, float(mpp), int(level), slide_width, slide_height
    )
