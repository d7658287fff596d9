"""Tile encoders fine-tuned from bag labels (``mil.model: topk``): top-k instance MIL.

Campanella et al. 2019 (Nat. Med.): each epoch the current network scores the tiles of every
training bag (at most ``score_tiles`` of them, a seeded draw), the ``k`` tiles that look most
like the highest class are kept with their bag's label, and the whole network, a timm encoder
that starts from the cohort's own encoder (or a given checkpoint, or hub weights), trains on
them, each tile D4-augmented. A bag's answer is the mean class probability of its ``k`` top
tiles among all its tiles; each tile's weight (its "attention") is its own score, normalised
over the bag. ``select: random`` instead keeps ``k`` random tiles per bag: every tile inherits
its bag's label, the naive tile classifier that top-k selection improves on.

The fold loop is the training stage's (:mod:`histodetect.fit.loop`: seeds, ``last.pt``
resume, early stopping, one MLflow run and TensorBoard events); the outputs are those of
:func:`histodetect.mil.train.train_fold`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histodetect.fit.loop import (
    FitState,
)
from histodetect.mil.data import Bag
from histodetect.mil.families import FAMILIES
from histodetect.mil.models import MilTask
from histodetect.mil.summary_image import TileSource, d4
from histodetect.mil.train import FamilyOptions, FoldPlan
from histodetect.mil.train_concat import SummaryImageNet, bag_rng

log = logging.getLogger(__name__)
FORMAT = FAMILIES["topk"].format
SELECT = ("top", "random")


@dataclass(frozen=True)
class TopkConfig(FamilyOptions):
    """The options a top-k model trains with: ``mil.topk`` and the shared ``task``,
    ``dropout``, ``early_stopping_patience``, ``class_balance`` and ``device`` of ``mil``; the
    encoder's ``backbone``, ``checkpoint`` and ``pretrained`` come from the run's resolved
    ``features`` section (the same start as the feature files')."""

    k: int = 2
    select: str = "top"
    score_tiles: int = 64
    batch_size: int = 32
    backbone: str = "resnet18"
    pretrained: bool = False
    checkpoint: str | None = None
    epochs: int = 8
    lr: float = 1e-4
    early_stopping_patience: int = 4

    def __post_init__(self) -> None:
        if self.select not in SELECT:
            raise ValueError(f"mil.topk.select must be one of {SELECT}, not {self.select!r}")
        if self.k < 1 or self.score_tiles < self.k:
            raise ValueError("mil.topk: k >= 1 and score_tiles >= k")

    @staticmethod
    def options_of(mil: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
        """The shared keys of ``mil``, its ``topk`` subsection and ``encoder`` (``backbone``,
        ``checkpoint``, ``pretrained``)."""
        shared = {k: mil[k] for k in ("task", "dropout", "class_balance", "device") if k in mil}
        return {**shared, **(mil.get("topk") or {}), **encoder}

    def plan(
        self, source: TileSource, train: list[Bag], val: list[Bag], task: MilTask,
        device: torch.device,
    ) -> FoldPlan:  # fmt: skip
        """The tile encoder (where the features' starts) and its head over single tiles; the
        epoch is chosen on the capped validation, the saved model scored on every tile."""
        model = SummaryImageNet(
            self.backbone, task.outputs, ordinal=self.task == "ordinal", dropout=self.dropout,
            pretrained=self.pretrained, checkpoint=self.checkpoint, kind="topk",
        ).to(device)  # fmt: skip
        return FoldPlan(
            model,
            epoch=lambda state, class_w, rng: _epoch(
                state, train, source, task, self, class_w, rng, device
            ),
            validate=lambda net: _validate(net, val, source, task, self, device, capped=False),
            select=lambda net: _validate(net, val, source, task, self, device, capped=True),
            meta={"k": self.k, "select": self.select, "seed": self.seed},
            model_format=FORMAT,
        )  # fmt: skip


def tile_score(probs: np.ndarray, task: MilTask) -> np.ndarray:
    """How much each tile ``(n, K)`` looks like the highest class: binary and multi-class
    ``1 - P(first class)``, ordinal the expected grade over the top grade."""
    if task.kind == "ordinal":
        return probs @ np.arange(task.k) / max(task.k - 1, 1)
    return 1.0 - probs[:, 0]


@torch.inference_mode()
def tile_probs(
    model: SummaryImageNet, task: MilTask, tiles: np.ndarray, device: torch.device, batch: int = 256
) -> np.ndarray:
    """Class probabilities ``(n, K)`` of uint8 NHWC tiles."""
    model.eval()
    out = [
        task.probs(model(torch.from_numpy(tiles[i : i + batch]).to(device))).float().cpu().numpy()
        for i in range(0, len(tiles), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, task.k), np.float32)


def bag_answer(
    model: SummaryImageNet,
    task: MilTask,
    source: TileSource,
    bag: Bag,
    k: int | None,
    device: torch.device,
    index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The bag's class probabilities ``(K,)``, the mean over its ``k`` top tiles, and every
    scored tile's probabilities ``(n, K)``; ``index``: the tiles to score (default all)."""
    n = len(source.table(bag))
    index = np.arange(n) if index is None else index
    probs = tile_probs(model, task, source.read(bag, index), device)
    return top_mean(probs, task, k), probs


def top_mean(probs: np.ndarray, task: MilTask, k: int | None) -> np.ndarray:
    """The mean class probabilities ``(K,)`` of the ``k`` top-scored tiles of ``(n, K)``
    (None: of all)."""
    return probs[np.argsort(-tile_score(probs, task), kind="stable")[:k]].mean(0)


def _selected(
    model: SummaryImageNet,
    bags: list[Bag],
    source: TileSource,
    task: MilTask,
    cfg: TopkConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's training tiles ``(m, px, px, 3)`` and their bags' labels ``(m,)``."""
    tiles, labels = [], []
    for bag in bags:
        n = len(source.table(bag))
        if cfg.select == "random":
            index = rng.choice(n, min(cfg.k, n), replace=False)
            chosen = source.read(bag, index)
        else:
            index = rng.choice(n, min(cfg.score_tiles, n), replace=False)
            read = source.read(bag, index)
            score = tile_score(tile_probs(model, task, read, device), task)
            chosen = read[np.argsort(-score, kind="stable")[: cfg.k]]
        tiles.append(chosen)
        labels += [bag.y] * len(chosen)
    return np.concatenate(tiles), np.array(labels)


def _epoch(
    state: FitState,
    bags: list[Bag],
    source: TileSource,
    task: MilTask,
    cfg: TopkConfig,
    class_w: np.ndarray,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """Select each bag's tiles with the current network, then one pass over them."""
    model = state.model
    tiles, labels = _selected(model, bags, source, task, cfg, rng, device)
    model.train()
    order = rng.permutation(len(tiles))
    weight = class_w if cfg.class_balance == "loss" else np.ones_like(class_w)
    total = 0.0
    # balanced chunks: no batch of one tile (batch norm) unless there is one tile
    for batch in np.array_split(order, max(1, -(-len(order) // cfg.batch_size))):
        x = np.stack([d4(tiles[i], int(rng.integers(8))) for i in batch])
        y = torch.from_numpy(labels[batch]).to(device)
        w = torch.from_numpy(weight[labels[batch]]).float().to(device)
        loss = (task.loss(model(torch.from_numpy(x).to(device)), y) * w).sum() / w.sum()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total += loss.item() * len(batch)
    return total / max(len(order), 1)


def _validate(
    model: SummaryImageNet,
    bags: list[Bag],
    source: TileSource,
    task: MilTask,
    cfg: TopkConfig,
    device: torch.device,
    *,
    capped: bool,
) -> tuple[float, np.ndarray]:
    """Mean negative log of the true class's probability and ``(bags, K)`` answers;
    ``capped``: at most ``score_tiles`` tiles a bag (a draw of the bag's own seed)."""
    probs = []
    for bag in bags:
        index = None
        n = len(source.table(bag))
        if capped and n > cfg.score_tiles:
            index = np.sort(bag_rng(cfg.seed, bag.bag_id).choice(n, cfg.score_tiles, replace=False))
        probs.append(
            bag_answer(model, task, source, bag, answer_k(cfg.select, cfg.k), device, index)[0]
        )
    out = np.array(probs)
    truth = out[np.arange(len(bags)), [b.y for b in bags]]
    return float(-np.log(np.clip(truth, 1e-7, 1)).mean()), out


def answer_k(select: str, k: int) -> int | None:
    """Tiles a bag's answer averages: its ``k`` top tiles, or all of them (None) when
    training drew random tiles (``select: random``, the naive tile classifier)."""
    return k if select == "top" else None


def load_topk_model(path: str | Path) -> tuple[SummaryImageNet, MilTask, dict[str, Any]]:
    """A fold model written by :func:`train_topk_fold`, in eval mode, with task and meta."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histodetect top-k tile model")
    meta, arch = blob["meta"], blob["meta"]["arch"]
    model = SummaryImageNet(
        arch["backbone"], arch["outputs"], ordinal=arch["ordinal"], dropout=arch["dropout"],
        kind="topk",
    )  # fmt: skip
    model.load_state_dict(blob["state_dict"])
    return model.eval(), MilTask(meta["task"], list(meta["classes"])), meta


class TopkScorer:
    """The fold models' answers on a bag (for :func:`histodetect.mil.ensemble.ensemble`) and
    their tile weights (the attention maps): every tile scored by every fold model."""

    def __init__(self, model_paths: Sequence[str | Path], source: TileSource) -> None:
        self.loaded = [load_topk_model(p) for p in model_paths]
        self.meta = self.loaded[0][2]
        self.source = source

    def tile_probs(self, bag: Bag, folds: Sequence[int] | None = None) -> np.ndarray:
        """``(folds, tiles, K)``: every tile of the bag by each fold model (``folds``: those
        of these indices only)."""
        chosen = self.loaded if folds is None else [self.loaded[i] for i in folds]
        tiles = self.source.read(bag, np.arange(len(self.source.table(bag))))
        cpu = torch.device("cpu")
        return np.array([tile_probs(m, t, tiles, cpu) for m, t, _ in chosen])

    def score(self, bag: Bag) -> tuple[np.ndarray, int]:
        """``(folds, K)`` probabilities and the bag's tile count."""
        probs, k = self.tile_probs(bag), answer_k(self.meta["select"], self.meta["k"])
        task = self.loaded[0][1]
        return np.array([top_mean(p, task, k) for p in probs]), probs.shape[1]

    def weights(self, bag: Bag, folds: Sequence[int] | None = None) -> np.ndarray:
        """Each tile's score, averaged over the fold models, normalised to sum 1."""
        task = self.loaded[0][1]
        w = np.mean(
            [tile_score(p, task) for p in self.tile_probs(bag, folds)], axis=0, dtype=np.float64
        )
        return w / max(w.sum(), 1e-12)
