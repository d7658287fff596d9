"""Train one fold of any slide-label family: :func:`train_fold` sets the fold up, the family's
options make its :class:`FoldPlan` (network, epoch and validation steps), and :func:`fit_fold`
runs the loop they share (seeds, ``last.pt`` resume, early stopping, one MLflow run and
TensorBoard events). The bag models over feature files (one bag per step) live here."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from histodetect.errors import SplitError
from histodetect.fit.ema import WeightEMA
from histodetect.fit.loop import (
    FitState,
    make_scheduler,
    record_epoch,
    resume,
    seed_all,
    tracked_run,
)
from histodetect.fit.metrics import binary_auc, multiclass_auc
from histodetect.fit.model import resolve_device
from histodetect.fit.tracking import RunLogger
from histodetect.io import atomic_path
from histodetect.mil.data import Bag, FeatureSource, bags_of, tile_stats
from histodetect.mil.models import FORMAT, BagModel, MilTask
from histodetect.mil.survival import centre_risk, cox_epoch, cox_validate, harrell_cindex

log = logging.getLogger(__name__)
PREDICTIONS = "val_predictions.parquet"
_RESUME_FREE = {"epochs", "early_stopping_patience", "device"}


@dataclass(frozen=True)
class FamilyOptions:
    """The options every slide-label family trains with (the shared keys of ``mil``); each
    family's options class adds its own."""

    task: str = "binary"
    regression_loss: str = "mse"
    dropout: float = 0.25
    epochs: int = 30
    lr: float = 2e-4
    weight_decay: float = 1e-4
    early_stopping_patience: int = 8
    class_balance: str = "loss"
    device: str = "auto"
    seed: int = 42

    @classmethod
    def from_section(
        cls, mil: dict[str, Any], seed: int, encoder: dict[str, Any] | None = None
    ) -> Any:
        """The family's options from the ``mil`` section (:meth:`options_of`), the seed and,
        for a family that fine-tunes a tile encoder, where it starts (``encoder``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged = cls.options_of(mil, encoder or {})
        return cls(**{k: v for k, v in merged.items() if k in names}, seed=seed)

    @staticmethod
    def options_of(mil: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
        """The keys this family reads (the fields of ``mil``; others are left out)."""
        return mil

    def resume_key(self) -> dict[str, Any]:
        """The options whose change makes ``last.pt`` of another run (not resumed)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RESUME_FREE}


@dataclass
class FoldPlan:
    """What a family brings to :func:`fit_fold`: its network, one epoch's step
    (``epoch(state, class_w, rng) -> loss``), its validation (``validate(net) -> (loss,
    probs)``; ``select`` for choosing the epoch, default ``validate``), what its loader needs
    beside the architecture (``meta``), its files' format tag and an optional weight average."""

    model: nn.Module
    epoch: Callable[[FitState, np.ndarray, np.random.Generator], float]
    validate: Callable[[nn.Module], tuple[float, np.ndarray]]
    select: Callable[[nn.Module], tuple[float, np.ndarray]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    model_format: str = FORMAT
    ema_decay: float | None = None
    finish: Callable[[FitState], None] | None = None
    """Called once the best epoch is known, before the fold is saved (survival: the log
    risk centred on the training bags, :func:`histodetect.mil.survival.centre_risk`)."""


@dataclass(frozen=True)
class MilConfig(FamilyOptions):
    """Training options of the ``mil`` config section (the others are the workflow's)."""

    model: str = "abmil"
    hidden: int = 128
    max_tiles: int | None = None
    clam_k: int = 8
    clam_weight: float = 0.3
    transformer_layers: int = 2
    transformer_heads: int = 4
    batch_bags: int = 32
    ties: str = "efron"

    def plan(
        self, source: FeatureSource, train: list[Bag], val: list[Bag], task: MilTask,
        device: torch.device,
    ) -> FoldPlan:  # fmt: skip
        """A bag model over ``source``'s feature files, its inputs standardised on ``train``."""
        model = BagModel(
            self.model, source.dim(train[0]), self.hidden, task.outputs, task.k,
            ordinal=self.task == "ordinal", dropout=self.dropout,
            layers=self.transformer_layers, heads=self.transformer_heads,
        )  # fmt: skip
        model.shift, model.scale = tile_stats(source, train)
        if task.kind == "survival":  # the Cox loss needs a batch of bags per step
            return FoldPlan(
                model.to(device),
                epoch=lambda state, class_w, rng: cox_epoch(
                    state, train, source, self, rng, device
                ),
                validate=lambda net: cox_validate(net, val, source, device, self.ties),
                finish=lambda state: centre_risk(state, train, source, device),
            )
        return FoldPlan(
            model.to(device),
            epoch=lambda state, class_w, rng: _epoch(
                state, train, source, task, self, class_w, rng, device
            ),
            validate=lambda net: _validate(net, val, source, task, device),
        )


def auc_of(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC of the positive class's probability, else one-vs-rest (weighted)."""
    if probs.shape[1] == 2:
        return binary_auc(y, probs[:, 1])
    return multiclass_auc(y, probs)


def fold_bags(folds: pd.DataFrame, fold: int) -> tuple[list[Bag], list[Bag]]:
    """The labelled training bags outside ``fold`` and those inside it (its validation)."""
    bags = [b for b in bags_of(folds) if b.split == "train" and b.y >= 0]
    train = [b for b in bags if b.fold != fold]
    val = [b for b in bags if b.fold == fold]
    if not train or not val:
        raise SplitError("folds", f"fold {fold} has {len(train)} training, {len(val)} val bags")
    return train, val


def class_weights(train: list[Bag], task: MilTask) -> tuple[np.ndarray, np.ndarray]:
    """The training bags' count per class and the inverse-frequency weight of each class
    (a numeric label: per stratum, every weight 1)."""
    if not task.classifies:
        counts = np.bincount([b.y for b in train]).astype(float)
        return counts, np.ones_like(counts)
    counts = np.bincount([b.y for b in train], minlength=task.k).astype(float)
    return counts, len(train) / (task.k * np.maximum(counts, 1))


def fold_task(cfg: Any, classes: list[str], train: list[Bag]) -> MilTask:
    """The fold's task: ``cfg.task`` over ``classes``; a numeric label standardised by the
    training bags' mean and spread."""
    if cfg.task == "survival":
        return MilTask("survival", [])
    if cfg.task != "regression":
        return MilTask(cfg.task, classes)
    targets = np.array([b.target for b in train], float)
    spread = float(targets.std()) if len(targets) > 1 and targets.std() > 0 else 1.0
    return MilTask("regression", [], cfg.regression_loss, float(targets.mean()), spread)


def task_meta(task: MilTask) -> dict[str, Any]:
    """What a loader needs of the task beside its kind and classes (regression's loss and
    standardisation)."""
    if task.classifies or task.kind == "survival":
        return {}
    return {"target": {"regression_loss": task.regression_loss, "shift": task.shift,
                       "scale": task.scale}}  # fmt: skip


def selection_score(
    task: MilTask, val: list[Bag], out: np.ndarray, val_loss: float
) -> tuple[list[float], dict[str, float]]:
    """What picks the epoch (larger is better, compared in order) and the epoch's quality
    measure: validation AUC then loss for classes; loss then mean absolute error for a
    number (``out``: the predictions ``(B, 1)``); Harrell's c-index then loss for survival
    (``out``: the log risks)."""
    if task.kind == "survival":
        times, events = (np.array([getattr(b, k) for b in val], float) for k in ("target", "event"))
        c = harrell_cindex(times, events, out[:, 0])
        return [c if np.isfinite(c) else -1.0, -val_loss], {"val_cindex": c}
    if not task.classifies:
        mae = float(np.mean(np.abs(out[:, 0] - np.array([b.target for b in val]))))
        return [-val_loss, -mae], {"val_mae": mae}
    auc = auc_of(np.array([b.y for b in val]), out)
    return [auc if np.isfinite(auc) else -1.0, -val_loss], {"val_auc": auc}


def train_fold(
    folds: pd.DataFrame,
    fold: int,
    source: Any,
    out_dir: Path,
    cfg: Any,
    classes: list[str],
    *,
    mlflow_uri: str,
    experiment: str,
    tb_dir: Path,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one fold of the family whose options ``cfg`` are (its ``plan``) on ``source``
    (feature files or tiles, as the family reads): train on the labelled training bags
    outside ``fold``, select on those inside it.

    Writes ``out_dir/last.pt`` every epoch, then ``model.pt`` (the best epoch by validation
    AUC, ties by loss; a number: by validation loss, ties by MAE, :func:`selection_score`), ``val_predictions.parquet`` (each validation bag's ``bag_id``,
    ``patient_id`` (its group), ``label``, ``fold`` and ``prob`` or ``prob_0..``, what the
    out-of-fold decision is chosen from) and ``training_metrics.json``; returns the metrics.
    The model records the groups it trained on (``train_patients``).
    """
    train, val = fold_bags(folds, fold)
    task = fold_task(cfg, classes, train)
    device = resolve_device(cfg.device)
    seed_all(cfg.seed + fold)
    plan = cfg.plan(source, train, val, task, device)
    return fit_fold(
        plan, cfg, fold, train, val, task, Path(out_dir),
        mlflow_uri=mlflow_uri, experiment=experiment, tb_dir=tb_dir, extra_meta=extra_meta,
    )  # fmt: skip


def fit_fold(
    plan: FoldPlan,
    cfg: Any,
    fold: int,
    train: list[Bag],
    val: list[Bag],
    task: MilTask,
    out_dir: Path,
    *,
    mlflow_uri: str,
    experiment: str,
    tb_dir: Path,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fold loop every slide-label family shares: AdamW with a cosine schedule (a weight
    average with ``plan.ema_decay``), ``last.pt`` resume, ``plan.epoch`` then ``plan.select``
    each epoch, early stopping on :func:`selection_score`, one MLflow run and
    TensorBoard events, then :func:`save_fold` with ``plan.validate``. ``cfg``: the family's
    options (``lr``, ``weight_decay``, ``epochs``, ``early_stopping_patience``, ``seed``,
    ``resume_key()``)."""
    model = plan.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, "cosine", cfg.epochs, cfg.early_stopping_patience)
    ema = WeightEMA(model, plan.ema_decay) if plan.ema_decay else None
    state = FitState(model, opt, sched, torch.amp.GradScaler("cuda", enabled=False), ema)
    last, key = out_dir / "last.pt", cfg.resume_key()
    resumed = resume(last, key, state)
    counts, class_w = class_weights(train, task)
    meta = {"fold": fold, "task": task.kind, "classes": task.classes, "arch": model.arch}
    meta |= task_meta(task)
    meta |= {**plan.meta, "train_patients": sorted({b.group for b in train})}
    meta |= {"config": dataclasses.asdict(cfg), **(extra_meta or {})}
    params = {**dataclasses.asdict(cfg), "fold": fold, "n_train": len(train), "n_val": len(val)}
    params |= {f"n_class_{c}": int(n) for c, n in zip(task.classes, counts, strict=task.classifies)}
    logger = RunLogger(mlflow_uri, experiment, f"mil_fold_{fold}", tb_dir)
    select = plan.select or plan.validate
    with tracked_run(logger, state, params, resumed=resumed, last=last, resume_key=key):
        for n in range(state.epoch + 1, cfg.epochs):
            if state.stop_early(cfg.early_stopping_patience):
                break
            train_loss = plan.epoch(state, class_w, np.random.default_rng([cfg.seed, fold, n]))
            val_loss, probs = select(state.net)
            score, quality = selection_score(task, val, probs, val_loss)
            row = {"train_loss": train_loss, "val_loss": val_loss, **quality}
            row["lr"] = opt.param_groups[0]["lr"]
            record_epoch(state, n, score, row, last=last, resume_key=key, logger=logger)
            log.info("fold %d epoch %d: %s", fold, n, row)
        if plan.finish:
            plan.finish(state)
        metrics = save_fold(state, val, task, out_dir, meta, plan.validate, plan.model_format)
        logger.finish(metrics, out_dir / "model.pt")
    return metrics


def _epoch(
    state: FitState,
    bags: list[Bag],
    source: FeatureSource,
    task: MilTask,
    cfg: MilConfig,
    class_w: np.ndarray,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """One pass (one bag per step); ``sampler`` draws bags class-balanced, ``loss`` weighs."""
    model = state.model.train()
    if cfg.class_balance == "sampler":
        p = class_w[[b.y for b in bags]]
        order = rng.choice(len(bags), len(bags), p=p / p.sum())
    else:
        order = rng.permutation(len(bags))
    total = 0.0
    for i in order:
        bag = bags[int(i)]
        x = source.bag(bag)
        if cfg.max_tiles and len(x) > cfg.max_tiles:
            x = x[torch.from_numpy(rng.choice(len(x), cfg.max_tiles, replace=False))]
        logits, weights, h = model(x.to(device))
        y = torch.tensor([task.target(bag)], device=device)
        loss = task.loss(logits, y)[0]
        if cfg.class_balance == "loss":
            loss = loss * float(class_w[bag.y])
        if cfg.model == "clam_sb" and task.classifies:  # its clustering needs the bag's class
            inst = model.instance_loss(h, weights, bag.y, cfg.clam_k)
            loss = (1 - cfg.clam_weight) * loss + cfg.clam_weight * inst
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total += loss.item()
    return total / max(len(bags), 1)


@torch.inference_mode()
def _validate(
    model: BagModel, bags: list[Bag], source: FeatureSource, task: MilTask, device: torch.device
) -> tuple[float, np.ndarray]:
    """Mean loss and ``(bags, K)`` class probabilities."""
    model.eval()
    losses, probs = [], []
    for bag, x in source.stream(bags):
        logits, _, _ = model(x.to(device))
        y = torch.tensor([task.target(bag)], device=device)
        losses.append(float(task.loss(logits, y)[0]))
        probs.append(task.probs(logits)[0].cpu().numpy())
    return float(np.mean(losses)), np.array(probs)


def save_fold(
    state: FitState,
    val: list[Bag],
    task: MilTask,
    out_dir: Path,
    meta: dict[str, Any],
    validate: Callable[[nn.Module], tuple[float, np.ndarray]],
    model_format: str = FORMAT,
) -> dict[str, Any]:
    """Write ``model.pt`` (the best epoch's weights of the network validated: the weight
    average with EMA), its predictions on the validation bags (``validate(net)``) and the
    metrics; shared by the bag models and the summary-image models (``model_format`` tells
    their files apart)."""
    model = state.net
    model.load_state_dict(state.best_weights)
    chosen = next(h for h in state.history if h["epoch"] == state.best_epoch)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.pt") as tmp:
        blob = {"format": model_format, "meta": {**meta, **chosen}, "state_dict": weights}
        torch.save(blob, tmp)
    val_loss, probs = validate(model)
    table = pd.DataFrame(
        {
            "bag_id": [b.bag_id for b in val],
            "patient_id": [b.group for b in val],
            "label": [b.y for b in val],
            "fold": meta["fold"],
        }
    )
    if task.kind == "survival":
        table = table.assign(target=[b.target for b in val], event=[b.event for b in val],
                             risk=probs[:, 0])  # fmt: skip
    elif not task.classifies:
        table = table.assign(target=[b.target for b in val], prediction=probs[:, 0])
    elif task.k == 2:
        table["prob"] = probs[:, 1]
    else:
        table = table.assign(**{f"prob_{k}": probs[:, k] for k in range(task.k)})
    with atomic_path(out_dir / PREDICTIONS) as tmp:
        table.to_parquet(tmp, index=False)
    metrics = {
        "best_epoch": state.best_epoch,
        "selected_epoch": state.best_epoch,
        "epochs_run": state.epoch + 1,
        **{k: chosen[k] for k in ("val_auc", "val_mae", "val_cindex") if k in chosen},
        "val_loss": val_loss,
    }
    with atomic_path(out_dir / "training_metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    return metrics
