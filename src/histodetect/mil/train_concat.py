"""The summary-image model (``mil.model: concat``): a timm CNN trained end to end per fold on
summary images of the bags (:mod:`histodetect.mil.summary_image`).

Training draws one summary image per bag and step, bags sampled class-balanced (rare grades
more often), each tile D4-augmented and the tile order shuffled; the fold loop is the training
stage's (:mod:`histodetect.fit.loop`: seeds, ``last.pt`` resume, early stopping, a weight
average (EMA) with ``ema_decay``, one MLflow run and TensorBoard events). Validation and test
vote: the mean of the class probabilities over ``draws`` summary images of the bag, drawn with
a seed of the bag's own, so a bag's answer does not depend on the bags scored before it. The
task heads are :class:`~histodetect.mil.models.MilTask`'s (binary, multi-class, ordinal
CORAL). The outputs are those of :func:`histodetect.mil.train.train_fold`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from histodetect.errors import InputError
from histodetect.fit.data import normalize_batch
from histodetect.fit.loop import (
    FitState,
)
from histodetect.fit.model import feature_width, load_backbone_weights
from histodetect.mil.data import Bag
from histodetect.mil.families import FAMILIES
from histodetect.mil.models import MilTask
from histodetect.mil.summary_image import SCORES, TileSource, draw_images, grid_side
from histodetect.mil.train import FamilyOptions, FoldPlan

log = logging.getLogger(__name__)
FORMAT = FAMILIES["concat"].format


@dataclass(frozen=True)
class ConcatConfig(FamilyOptions):
    """The ``mil`` options a summary-image model trains with: ``mil.concat`` beside the shared
    ones."""

    k: int = 16
    score: str = "random"
    draws: int = 8
    backbone: str = "resnet18"
    pretrained: bool = False
    checkpoint: str | None = None
    batch_size: int = 8
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise InputError(
                "config",
                f"mil.concat.score {self.score!r}: one of {', '.join(SCORES)} (attention would "
                "need an attention model trained beside the summary-image one)",
            )

    @staticmethod
    def options_of(mil: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
        """``mil`` and its ``concat`` subsection (the backbone is its own: no ``encoder``)."""
        return {**mil, **(mil.get("concat") or {})}

    def plan(
        self, source: TileSource, train: list[Bag], val: list[Bag], task: MilTask,
        device: torch.device,
    ) -> FoldPlan:  # fmt: skip
        """A summary-image network over ``source``'s tiles, ``k`` of a bag in one image."""
        model = SummaryImageNet(
            self.backbone, task.outputs, ordinal=self.task == "ordinal", dropout=self.dropout,
            pretrained=self.pretrained, checkpoint=self.checkpoint,
        ).to(device)  # fmt: skip
        return FoldPlan(
            model,
            epoch=lambda state, class_w, rng: _epoch(
                state, train, source, task, self, class_w, rng, device
            ),
            validate=lambda net: _validate(net, val, source, task, self, device),
            meta={"k": self.k, "score": self.score, "draws": self.draws, "seed": self.seed},
            model_format=FORMAT, ema_decay=self.ema_decay,
        )  # fmt: skip


class SummaryImageNet(nn.Module):
    """A timm backbone (global pooled) and the task's head over uint8 NHWC images: summary
    images (``kind`` concat) or single tiles (``kind`` topk, :mod:`histodetect.mil.train_topk`).

    Ordinal (CORAL): one score shared by ``outputs`` ordered thresholds, as
    :class:`~histodetect.mil.models.BagModel`'s head.
    """

    def __init__(
        self,
        backbone: str,
        outputs: int,
        *,
        ordinal: bool,
        dropout: float,
        pretrained: bool = False,
        checkpoint: str | None = None,
        kind: str = "concat",
    ) -> None:
        super().__init__()
        net = timm.create_model(backbone, pretrained=pretrained and not checkpoint, num_classes=0)
        if checkpoint:
            load_backbone_weights(net, checkpoint)
        self.backbone = net
        self.arch = {"kind": kind, "backbone": backbone, "outputs": outputs}
        self.arch |= {"ordinal": ordinal, "dropout": dropout}
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_width(net), 1 if ordinal else outputs, bias=not ordinal)
        self.bias = nn.Parameter(torch.linspace(1, -1, outputs)) if ordinal else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, outputs)`` of ``(B, H, W, 3)`` uint8 images."""
        x = normalize_batch(images.permute(0, 3, 1, 2))
        logits = self.head(self.drop(self.backbone(x)))
        return logits + self.bias[None] if self.bias is not None else logits


def bag_rng(seed: int, bag_id: str) -> np.random.Generator:
    """The generator of a bag's test-time draws (the same whatever else is scored)."""
    return np.random.default_rng([seed, zlib.crc32(bag_id.encode())])


def draw_set(
    source: TileSource, bag: Bag, k: int, score: str, draws: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``draws`` summary images of the bag (``(D, H, W, 3)``, no augmentation) and the tile
    indices in each, from :func:`bag_rng`."""
    rng = bag_rng(seed, bag.bag_id)
    pairs = [draw_images(source, bag, k, score, rng, augment=False) for _ in range(draws)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


@torch.inference_mode()
def draw_probs(
    model: nn.Module, task: MilTask, images: np.ndarray, device: torch.device
) -> np.ndarray:
    """Class probabilities ``(D, K)`` of each summary image."""
    model.eval()
    logits = model(torch.from_numpy(images).to(device))
    return task.probs(logits).cpu().numpy()


def vote(model: nn.Module, task: MilTask, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The bag's class probabilities ``(K,)``: the mean over its summary images."""
    return draw_probs(model, task, images, device).mean(0)


def _epoch(
    state: FitState,
    bags: list[Bag],
    source: TileSource,
    task: MilTask,
    cfg: ConcatConfig,
    class_w: np.ndarray,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """One pass of ``len(bags)`` summary images, bags drawn class-balanced (``class_balance``
    ``none``: each once), ``batch_size`` per step."""
    model = state.model.train()
    if cfg.class_balance == "none":
        order = rng.permutation(len(bags))
    else:
        p = class_w[[b.y for b in bags]]
        order = rng.choice(len(bags), len(bags), p=p / p.sum())
    total = 0.0
    # balanced chunks: no batch of one image (batch norm) unless there is one bag
    for batch in np.array_split(order, max(1, -(-len(order) // cfg.batch_size))):
        chosen = [bags[int(i)] for i in batch]
        images = [draw_images(source, b, cfg.k, cfg.score, rng, augment=True)[0] for b in chosen]
        x = torch.from_numpy(np.stack(images)).to(device)
        y = torch.tensor([b.y for b in chosen], device=device)
        loss = task.loss(model(x), y).mean()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if state.ema is not None:
            state.ema.update(model)
        total += loss.item() * len(chosen)
    return total / max(len(bags), 1)


def _validate(
    model: nn.Module,
    bags: list[Bag],
    source: TileSource,
    task: MilTask,
    cfg: ConcatConfig,
    device: torch.device,
) -> tuple[float, np.ndarray]:
    """Mean negative log of the voted probability of the true class, and ``(bags, K)`` votes."""
    probs = np.array(
        [
            vote(model, task, draw_set(source, b, cfg.k, cfg.score, cfg.draws, cfg.seed)[0], device)
            for b in bags
        ]
    )
    truth = probs[np.arange(len(bags)), [b.y for b in bags]]
    return float(-np.log(np.clip(truth, 1e-7, 1)).mean()), probs


def load_concat_model(path: str | Path) -> tuple[SummaryImageNet, MilTask, dict[str, Any]]:
    """A fold model written by :func:`train_concat_fold`, in eval mode, with task and meta
    (the backbone is built bare: its weights are the file's)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histodetect summary-image model")
    meta, arch = blob["meta"], blob["meta"]["arch"]
    model = SummaryImageNet(
        arch["backbone"], arch["outputs"], ordinal=arch["ordinal"], dropout=arch["dropout"]
    )
    model.load_state_dict(blob["state_dict"])
    return model.eval(), MilTask(meta["task"], list(meta["classes"])), meta


class ConcatScorer:
    """The fold models' votes on a bag, for :func:`histodetect.mil.ensemble.ensemble`."""

    def __init__(self, model_paths: Sequence[str | Path], source: TileSource) -> None:
        self.loaded = [load_concat_model(p) for p in model_paths]
        self.meta = self.loaded[0][2]
        self.source = source

    def score(self, bag: Bag) -> tuple[np.ndarray, int]:
        """``(folds, K)`` voted probabilities and the bag's tile count."""
        m = self.meta
        images, _ = draw_set(self.source, bag, m["k"], m["score"], m["draws"], m["seed"])
        cpu = torch.device("cpu")
        per_fold = np.array([vote(model, task, images, cpu) for model, task, _ in self.loaded])
        return per_fold, len(self.source.table(bag))


def occlusion_weights(
    models: Sequence[tuple[SummaryImageNet, MilTask]],
    source: TileSource,
    bag: Bag,
    meta: dict[str, Any],
) -> np.ndarray:
    """Where a summary-image model looked, as tile weights ``(tiles,)`` summing to 1.

    The bag's test-time draws (:func:`draw_set`) are scored whole and with each tile's cell
    filled in turn with the draw's median colour (white, never seen in a full grid, would
    itself move the answer); a tile's weight is the mean drop of the called class's probability (the
    class of the largest mean vote) when it is blanked, over the models and the draws that
    hold it, floored at 0. Tiles never drawn weigh 0; a bag where nothing drops shares the
    weight among its drawn tiles by how often each was drawn.
    """
    k = meta["k"]
    images, chosen = draw_set(source, bag, k, meta["score"], meta["draws"], meta["seed"])
    n, cpu = len(source.table(bag)), torch.device("cpu")
    base = np.array([draw_probs(m, t, images, cpu) for m, t in models])  # (F, D, K)
    call = int(base.mean((0, 1)).argmax())
    drop, seen = np.zeros(n), np.zeros(n)
    cells = grid_side(k)
    px = images.shape[1] // cells  # one tile's side
    for d, index in enumerate(chosen):
        blanked = np.repeat(images[d : d + 1], len(index), 0)
        boxes = [np.s_[r * px : (r + 1) * px, c * px : (c + 1) * px]
                 for r, c in (divmod(i, cells) for i in range(len(index)))]  # fmt: skip
        fill = np.median(np.concatenate([images[d][b].reshape(-1, 3) for b in boxes]), 0)
        for i, box in enumerate(boxes):
            blanked[i][box] = fill
        for f, (m, t) in enumerate(models):
            effect = base[f, d, call] - draw_probs(m, t, blanked, cpu)[:, call]
            np.add.at(drop, index, np.clip(effect, 0, None))
            np.add.at(seen, index, 1)
    weights = np.divide(drop, seen, out=np.zeros(n), where=seen > 0)
    if weights.sum() <= 0:
        weights = seen
    return weights / max(weights.sum(), 1e-12)
