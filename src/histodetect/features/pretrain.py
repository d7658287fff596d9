"""The cohort's own encoder: self-supervised training (lightly) on training patients' tiles.

No labels are read. Two views of each tile are random crops at the tile's own resolution
(no rescale: the scale of nuclei is what a pathologist reads), each with a random D4 symmetry,
stain (HED) or HSV jitter and, at random, a Gaussian blur. SimCLR (NT-Xent over the batch) or
BYOL (an online network predicting a momentum copy) from lightly's heads and losses.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from histodetect.cohort.splits import assert_training_only
from histodetect.fit.data import (
    augment_batch,
    make_loader,
    normalize_batch,
    random_crop,
)
from histodetect.fit.loop import (
    FitState,
    make_scheduler,
    record_epoch,
    resume,
    seed_all,
    tracked_run,
)
from histodetect.fit.model import feature_width, resolve_device
from histodetect.fit.tracking import RunLogger
from histodetect.io import atomic_path

log = logging.getLogger(__name__)
FORMAT = "histodetect-ssl-encoder/1"
METHODS = ("simclr", "byol")
_RESUME_FREE = {"num_workers", "device"}  # options that leave the trajectory alone


@dataclass(frozen=True)
class SSLConfig:
    """Options of ``pretrain_encoder`` (the ``ssl`` section of the config)."""

    method: str = "simclr"
    model: str = "resnet18"
    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_tiles: int = 5000
    """Tiles drawn once (seeded, evenly over slides) from the training patients' tissue."""
    crop_fraction: float = 0.75
    """Each view is a random square of this share of the tile side, at the tile's mpp."""
    colour_jitter: float = 0.15
    jitter_space: str = "hed"
    blur_prob: float = 0.3
    temperature: float = 0.2
    proj_dim: int = 128
    momentum: float = 0.99
    """BYOL: start of the target network's momentum (cosine to 1 over training)."""
    seed: int = 42
    num_workers: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"ssl.method must be one of {METHODS}, not {self.method!r}")
        if self.jitter_space not in ("hsv", "hed"):
            raise ValueError(f"ssl.jitter_space must be 'hsv' or 'hed', not {self.jitter_space!r}")
        if not 0.2 <= self.crop_fraction <= 1.0 or self.epochs < 1 or self.batch_size < 4:
            raise ValueError("ssl: crop_fraction in [0.2, 1], epochs >= 1, batch_size >= 4")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SSLConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ssl option(s) {unknown}; known: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in d.items() if v is not None or k == "num_workers"})

    def workers(self) -> int:
        """``num_workers``, or when None one per CPU core beyond the first (at most 4)."""
        if self.num_workers is not None:
            return self.num_workers
        return min(4, max(0, len(os.sched_getaffinity(0)) - 1))


class SSLModel(nn.Module):
    """Backbone plus the method's heads (and BYOL's momentum copies)."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.method = cfg.method
        self.backbone = timm.create_model(cfg.model, pretrained=False, num_classes=0)
        dim = feature_width(self.backbone)
        if cfg.method == "simclr":
            self.projection: nn.Module = SimCLRProjectionHead(dim, dim, cfg.proj_dim)
            self.criterion: nn.Module = NTXentLoss(temperature=cfg.temperature)
        else:
            self.projection = BYOLProjectionHead(dim, dim, cfg.proj_dim)
            self.prediction = BYOLPredictionHead(cfg.proj_dim, dim, cfg.proj_dim)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_momentum = copy.deepcopy(self.projection)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_momentum)
            self.criterion = NegativeCosineSimilarity()

    def loss(self, v1: torch.Tensor, v2: torch.Tensor, momentum: float) -> torch.Tensor:
        if self.method == "simclr":
            return self.criterion(
                self.projection(self.backbone(v1)), self.projection(self.backbone(v2))
            )
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection, self.projection_momentum, m=momentum)
        p1 = self.prediction(self.projection(self.backbone(v1)))
        p2 = self.prediction(self.projection(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.projection_momentum(self.backbone_momentum(v1))
            z2 = self.projection_momentum(self.backbone_momentum(v2))
        return 0.5 * (self.criterion(p1, z2) + self.criterion(p2, z1))


def two_views(
    x: torch.Tensor, cfg: SSLConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented, normalised views of a uint8 NCHW batch (see the module docstring)."""
    x = x.float().div_(255.0)
    crop = max(8, round(x.shape[-1] * cfg.crop_fraction))
    views = []
    for _ in range(2):
        v = random_crop(x, crop, generator)
        v = augment_batch(
            v, colour_jitter=cfg.colour_jitter, generator=generator, jitter_space=cfg.jitter_space
        )
        blur = torch.rand(len(v), generator=generator) < cfg.blur_prob
        if blur.any():
            sigma = float(0.1 + 1.9 * torch.rand(1, generator=generator))
            v[blur] = TF.gaussian_blur(v[blur], kernel_size=[5, 5], sigma=[sigma, sigma])
        views.append(normalize_batch(v).contiguous(memory_format=torch.channels_last))
    return views[0], views[1]


class _Pace:
    """Logs once, after its first steps, how long the whole pretraining will take at that
    pace (the first ``skip`` steps, slowed by the loaders' start, not counted)."""

    def __init__(self, steps: int, skip: int = 3, measure: int = 5) -> None:
        self.steps, self.skip, self.measure = steps, skip, measure
        self.done, self.t0 = 0, 0.0

    def step(self) -> None:
        self.done += 1
        if self.done == self.skip:
            self.t0 = time.perf_counter()
        elif self.done == self.skip + self.measure:
            per_step = (time.perf_counter() - self.t0) / self.measure
            log.info(
                "pretrain_encoder: about %.1f min in all (%.2f s a step over steps %d-%d of "
                "%d)", per_step * self.steps / 60, per_step, self.skip + 1, self.done, self.steps,
            )  # fmt: skip


def draw_tiles(tiles: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` tiles, as evenly over slides as their tile counts allow (seeded)."""
    if len(tiles) <= n:
        return tiles.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tiles))
    shuffled = tiles.iloc[order]
    rank = shuffled.groupby("slide_id", sort=False).cumcount().to_numpy()
    keep = np.argsort(rank, kind="stable")[:n]  # round-robin over slides
    return shuffled.iloc[np.sort(keep)].reset_index(drop=True)


def pretrain_encoder(
    tiles: pd.DataFrame,
    split: pd.DataFrame,
    out_dir: Path,
    cfg: SSLConfig,
    *,
    source: str,
    mlflow_uri: str,
    experiment: str,
    tb_dir: Path,
    tiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the encoder; resume from ``out_dir/last.pt``; write ``out_dir/encoder.pt``.

    ``tiles`` (with ``path``) must hold training patients only, checked against ``split``
    (the table of ``split_patients``; ``source`` names the tile tables in the error).
    ``encoder.pt`` holds the backbone's ``state_dict`` (timm layout: what
    ``features.source: ssl`` and ``train.init: ssl`` load) and a record of how it was made.
    """
    assert_training_only(tiles["slide_id"], split, source, "self-supervised pretraining")
    out_dir, last = Path(out_dir), Path(out_dir) / "last.pt"
    seed_all(cfg.seed)
    device = resolve_device(cfg.device)
    drawn = draw_tiles(tiles, cfg.max_tiles, cfg.seed)
    model = SSLModel(cfg).to(device).to(memory_format=torch.channels_last)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = FitState(
        model,
        opt,
        make_scheduler(opt, "cosine", cfg.epochs, 0),
        torch.amp.GradScaler(enabled=False),
    )
    resume_key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE}
    resumed = resume(last, resume_key, state)
    drop_last = len(drawn) > cfg.batch_size
    loader = make_loader(drawn, cfg.batch_size, cfg.workers(), True, cfg.seed, drop_last=drop_last)
    params = {
        **dataclasses.asdict(cfg),
        "n_tiles": len(drawn),
        "n_slides": drawn.slide_id.nunique(),
    }
    logger = RunLogger(mlflow_uri, experiment, "ssl_encoder", tb_dir, step_metric="ssl_loss")
    gen = torch.Generator()
    steps = cfg.epochs * max(1, len(loader))
    left = (cfg.epochs - state.epoch - 1) * len(loader)
    log.info(
        "pretrain_encoder: %s (%s) on %d tiles of %d training slides, %d epochs of %d steps "
        "(%d left); the time it will take follows its first steps",
        cfg.method, cfg.model, len(drawn), params["n_slides"], cfg.epochs, len(loader), left,
    )  # fmt: skip
    pace = _Pace(left)
    with tracked_run(logger, state, params, resumed=resumed, last=last, resume_key=resume_key):
        for epoch in range(state.epoch + 1, cfg.epochs):
            loader.generator.manual_seed(cfg.seed + 1000 * epoch)
            gen.manual_seed(cfg.seed + 1000 * epoch + 1)
            model.train()
            total, n, t0 = 0.0, 0, time.perf_counter()
            batches = tqdm(loader, desc=f"ssl epoch {epoch}", file=sys.stderr, mininterval=5.0)
            for step, (images, _) in enumerate(batches):
                v1, v2 = (v.to(device, non_blocking=True) for v in two_views(images, cfg, gen))
                m = cosine_schedule(epoch * len(loader) + step, steps, cfg.momentum, 1.0)
                loss = model.loss(v1, v2, m)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.item() * len(images), n + len(images)
                pace.step()
            row = {"ssl_loss": total / max(n, 1), "lr": opt.param_groups[0]["lr"]}
            row["train_img_s"] = n / max(time.perf_counter() - t0, 1e-9)
            record_epoch(
                state, epoch, [-row["ssl_loss"]], row, last=last, resume_key=resume_key,
                logger=logger,
            )  # fmt: skip
            log.info("ssl epoch %d: %s", epoch, row)
        train_patients = split.loc[split.split == "train", "patient_id"].unique()
        meta = {
            "model": cfg.model,
            "method": cfg.method,
            "config": dataclasses.asdict(cfg),
            "n_tiles": len(drawn),
            "train_patients": sorted(map(str, train_patients)),
            "slides": sorted(map(str, drawn.slide_id.unique())),
            "tiling": tiling,
            "history": state.history,
        }
        backbone = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
        with atomic_path(out_dir / "encoder.pt") as tmp:  # the last epoch's, not the best loss's
            torch.save({"format": FORMAT, "meta": meta, "state_dict": backbone}, tmp)
        metrics = {"selected_epoch": state.epoch, "ssl_loss": state.history[-1]["ssl_loss"]}
        metrics["n_tiles"] = len(drawn)
        with atomic_path(out_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps({**metrics, "history": state.history}, indent=2) + "\n")
        logger.finish(metrics, out_dir / "encoder.pt")
    return metrics
