"""A second training round on the fold's own false positives (``points.hard_negative_rounds``).

Inside one fold's training job, so the DAG and ``snakemake results/models/fold_3/model.pt``
stay as they are:

1. round 0: :func:`~histodetect.training.train.train_fold` on the fold's training rows, into
   ``out_dir/round_0``;
2. that model scores the negative tiles of the fold's *training* slides (every labelled tile,
   not only the undersampled rows; at most ``max_pool``, seeded); a negative tile has no
   expert centre within the label radius of it, so one it calls positive (``p >= 0.5``, the
   plain decision: no out-of-fold threshold exists inside the job, and the fold's validation
   rows are its held-out patients, not to be used for choosing training data) is a false
   positive more than ``match_um`` from any truth centre;
3. round 1: a fresh model (same seed and settings) on the training rows plus those false
   positives as extra negatives (the highest-scoring first, at most as many as the training
   rows hold negatives), into ``out_dir``; it is the fold's model.

``out_dir/hard_negatives.parquet`` lists the tiles added, with their round-0 probability.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from histodetect.fit.data import make_loader, prepare_batch
from histodetect.fit.model import load_model, resolve_device
from histodetect.fit.stain import StainNormalizer
from histodetect.io import atomic_path
from histodetect.training.train import TRAINING_METRICS, TrainConfig, train_fold

log = logging.getLogger(__name__)
HARD_NEGATIVES = "hard_negatives.parquet"
FIRST_ROUND = "round_0"


def positive_probability(
    model_path: str | Path, tiles: pd.DataFrame, *, batch_size: int = 128, device: str = "cpu"
) -> np.ndarray:
    """Raw lesion probability of each tile (sigmoid, or one minus the background softmax)."""
    dev = resolve_device(device)
    model, meta = load_model(model_path, dev)
    model.eval()
    stain = None
    if meta.get("stain_norm"):
        reference = (meta.get("config") or {}).get("stain_reference")
        stain = StainNormalizer(meta["stain_norm"], reference)
    loader = make_loader(tiles, batch_size, 0, False, 0, transform=stain)
    norm = {"mean": tuple(meta["mean"]), "std": tuple(meta["std"])} if "mean" in meta else {}
    out = []
    with torch.inference_mode():
        for images, _ in loader:
            logits = model(prepare_batch(images, dev, **norm)).float()
            if meta.get("loss") == "ce":
                out.append(1 - torch.softmax(logits, dim=1)[:, 0])
            else:
                out.append(torch.sigmoid(logits[:, 0]))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)


def false_positive_tiles(
    model_path: str | Path,
    pool: pd.DataFrame,
    *,
    limit: int,
    exclude: pd.DataFrame | None = None,
    max_pool: int = 20000,
    seed: int = 0,
    device: str = "cpu",
) -> pd.DataFrame:
    """Negative tiles of ``pool`` the model calls positive (``p >= 0.5``), highest first,
    at most ``limit``; column ``round0_prob`` added. ``max_pool`` negatives are scored at most;
    tiles of ``exclude`` (the training rows, by ``slide_id, x, y``) are not drawn again."""
    negatives = pool[pool["label"] == 0]
    if exclude is not None and {"slide_id", "x", "y"} <= set(exclude.columns) & set(pool.columns):
        keys = ["slide_id", "x", "y"]
        taken = pd.MultiIndex.from_frame(exclude[keys])
        negatives = negatives[~pd.MultiIndex.from_frame(negatives[keys]).isin(taken)]
    if len(negatives) > max_pool:
        negatives = negatives.sample(n=max_pool, random_state=seed)
    prob = positive_probability(model_path, negatives.reset_index(drop=True), device=device)
    scored = negatives.reset_index(drop=True).assign(round0_prob=prob)
    called = scored[scored["round0_prob"] >= 0.5]
    return called.sort_values("round0_prob", ascending=False, kind="stable").head(limit)


def train_with_hard_negatives(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    pool: pd.DataFrame,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    fold: int,
    run_name: str,
    max_pool: int = 20000,
    **train_args: Any,
) -> dict[str, Any]:
    """Round 0, its false positives on the training slides' tiles, round 1 (see module doc).

    ``pool``: every labelled tile of the fold's training slides (``label`` 0 for negatives),
    never a validation patient's. Returns round 1's metrics plus ``n_hard_negatives``.
    """
    out_dir = Path(out_dir)
    seen = set(map(str, pool.get("patient_id", pd.Series(dtype=str)).unique()))
    held_out = set(map(str, val_df.get("patient_id", pd.Series(dtype=str)).unique()))
    if seen & held_out:
        raise ValueError(f"fold {fold}: the hard-negative pool holds validation patients")
    first = out_dir / FIRST_ROUND
    train_fold(train_df, val_df, first, cfg, fold=fold, run_name=f"{run_name}_round0", **train_args)
    negatives = int((train_df["label"] == 0).sum())
    hard = false_positive_tiles(
        first / "model.pt",
        pool,
        limit=negatives,
        exclude=train_df,
        max_pool=max_pool,
        seed=cfg.seed + fold,
        device=cfg.device,
    )
    log.info("fold %d: %d false-positive tiles of the training slides added", fold, len(hard))
    with atomic_path(out_dir / HARD_NEGATIVES) as tmp:
        hard.drop(columns=["path"], errors="ignore").to_parquet(tmp, index=False)
    extra = hard.drop(columns=["round0_prob"])[list(train_df.columns.intersection(hard.columns))]
    metrics = train_fold(
        pd.concat([train_df, extra], ignore_index=True),
        val_df,
        out_dir,
        cfg,
        fold=fold,
        run_name=run_name,
        **train_args,
    )
    metrics |= {"n_hard_negatives": len(hard)}
    with atomic_path(out_dir / TRAINING_METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    return metrics
