"""Train one cross-validation fold, resumable, logged to MLflow and TensorBoard."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from histodetect.cohort.sampling import class_balanced_weights
from histodetect.errors import name_some
from histodetect.fit.data import augment_batch, make_loader, mixup, prepare_batch, random_crop
from histodetect.fit.ema import WeightEMA
from histodetect.fit.loop import (
    FitState,
    make_scheduler,
    record_epoch,
    resume,
    seed_all,
    tracked_run,
)
from histodetect.fit.metrics import (
    at_decision,
    binary_auc,
    metric_key,
    multiclass_auc,
    multiclass_metrics,
    patch_metrics,
)
from histodetect.fit.model import (
    balanced_loss_weights,
    build_model,
    make_loss,
    resolve_device,
    save_model,
)
from histodetect.fit.stain import StainNormalizer
from histodetect.fit.tracking import RunLogger
from histodetect.io import atomic_path

log = logging.getLogger(__name__)
# Options that do not change the optimisation trajectory: a checkpoint stays resumable.
_RESUME_FREE = {"epochs", "early_stopping_patience", "num_workers", "device", "select"}
BALANCES = ("none", "sampler", "loss")
PREDICTIONS = "val_predictions.parquet"
TRAINING_METRICS = "training_metrics.json"
"""A fold's validation metrics at the plain decision; the workflow's ``oof_threshold`` adds
those at the out-of-fold one and writes the fold's ``metrics.json``."""
_ID_COLUMNS = ("patient_id", "group_id", "slide_id", "path", "x", "y")


@dataclass(frozen=True)
class TrainConfig:
    """Training options of one fold (the ``train`` section of the workflow config)."""

    backbone: str = "resnet18"
    pretrained: bool = False
    checkpoint: str | None = None
    init: str | None = None
    """``ssl``: the backbone starts from the cohort's own encoder, whose file the workflow
    gives as ``checkpoint``; None: ``pretrained``, ``checkpoint`` or random."""
    hidden: int = 256
    dropout: float = 0.2
    loss: str = "bce"
    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    early_stopping_patience: int = 5
    """Stop after this many epochs without improvement; 0 disables early stopping."""
    num_workers: int | None = None
    """Tile-reading worker processes; None: one per CPU core beyond the first, at most 4."""
    seed: int = 42
    amp: bool = True
    channels_last: bool = True
    """NHWC layout: faster convolutions on GPUs and on CPUs (oneDNN)."""
    device: str = "auto"
    augment: bool = True
    crop_px: int | None = None
    """Train on random ``crop_px`` squares of each tile (same pixel scale, cheaper steps);
    validation and inference score whole tiles (global pooling). None: whole tiles."""
    colour_jitter: float = 0.1
    jitter_space: str = "hsv"
    """``hsv`` (brightness, contrast, saturation, hue) or ``hed`` (stain concentrations)."""
    stain_norm: str | None = None
    """None, ``macenko`` or ``reinhard``: applied to every tile, in training and validation."""
    stain_reference: str | None = None
    """Image whose stains are the normalisation target (published defaults when None)."""
    label_smoothing: float = 0.0
    """Soften training targets by this much (towards uniform); validation uses hard ones."""
    mixup_alpha: float = 0.0
    """Blend image pairs with a Beta(alpha, alpha) weight, and their losses alike (0: off)."""
    ema_decay: float | None = None
    """Per-step decay of an exponential moving average of the weights (e.g. 0.999); the
    average is what is validated, selected and saved. None: the raw weights."""
    select: str = "best"
    """Epoch that ``model.pt`` keeps: ``best`` on the validation set, or ``last``."""
    class_balance: str = "none"
    """How the classes of the fold's training rows are balanced: ``none``; ``sampler`` (a
    weighted draw holding the classes in equal expectation, same epoch length); ``loss``
    (class weights in the loss: BCE ``pos_weight``, cross-entropy ``weight``, focal ``alpha``)."""

    def __post_init__(self) -> None:
        for name, allowed in (
            ("loss", ("bce", "focal", "ce")),
            ("scheduler", ("cosine", "plateau")),
            ("device", ("auto", "cpu", "cuda")),
            ("jitter_space", ("hsv", "hed")),
            ("stain_norm", (None, "macenko", "reinhard")),
            ("select", ("best", "last")),
            ("class_balance", BALANCES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"train.{name} must be one of {allowed}, not {getattr(self, name)!r}"
                )
        if self.init not in (None, "ssl") or (self.init == "ssl" and not self.checkpoint):
            raise ValueError(
                f"train.init must be null or 'ssl' (with its encoder file), not {self.init!r}"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be >= 1")
        if self.crop_px is not None and self.crop_px < 8:
            raise ValueError(f"train.crop_px must be at least 8 px, not {self.crop_px}")
        if not 0.0 <= self.label_smoothing < 1.0 or self.mixup_alpha < 0:
            raise ValueError("train.label_smoothing must be in [0, 1), train.mixup_alpha >= 0")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), not {self.ema_decay}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting keys that are not fields."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise ValueError(f"unknown training option {key!r}; known: {', '.join(names)}")
        return cls(**d)

    def workers(self) -> int:
        """``num_workers``, or when None one per CPU core beyond the first (at most 4)."""
        if self.num_workers is not None:
            return self.num_workers
        return min(4, max(0, len(os.sched_getaffinity(0)) - 1))

    def resume_key(self) -> dict[str, Any]:
        """Options a checkpoint must share to be resumed (cosine depends on ``epochs``)."""
        free = _RESUME_FREE - ({"epochs"} if self.scheduler == "cosine" else set())
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in free}


@dataclass(frozen=True)
class Task:
    """Binary (one logit, BCE or focal) or multi-class (one logit per class, cross-entropy)."""

    classes: list[str]
    loss: str

    @property
    def multiclass(self) -> bool:
        return self.loss == "ce"

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.multiclass else 1

    @classmethod
    def from_tables(cls, cfg: TrainConfig, *tables: pd.DataFrame) -> Task:
        """Classes ``0..max(label)`` named by a ``class_name`` column when there is one."""
        both = pd.concat([t[[c for c in ("label", "class_name") if c in t]] for t in tables])
        k = max(2, int(both["label"].max()) + 1)
        names = [str(i) for i in range(k)]
        if "class_name" in both:
            for code, name in both.drop_duplicates("label").itertuples(index=False):
                names[int(code)] = str(name)
        loss = cfg.loss
        if k > 2 and loss != "ce":
            if loss == "focal":
                raise ValueError(f"the focal loss is binary but the tiles have {k} classes")
            log.warning("%d classes: training with cross-entropy instead of %s", k, loss)
            loss = "ce"
        return cls(names, loss)

    def loss_of(
        self, loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0
    ) -> torch.Tensor:
        """Loss of ``(N, outputs)`` logits against labels, softened by ``smoothing``."""
        if self.multiclass:
            if not smoothing:
                return loss_fn(logits.float(), y.long())
            k = logits.shape[1]
            soft = nn.functional.one_hot(y.long(), k).float() * (1 - smoothing) + smoothing / k
            return loss_fn(logits.float(), soft)
        return loss_fn(logits[:, 0].float(), y.float() * (1 - smoothing) + smoothing / 2)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of the single logit (binary) or softmax over classes."""
        if self.multiclass:
            return torch.softmax(logits.float(), dim=1)
        return torch.sigmoid(logits[:, 0].float())

    def auc(self, y: np.ndarray, probs: np.ndarray) -> float:
        """Binary AUC, or one-vs-rest AUC weighted by class size; NaN if a class is absent."""
        if not self.multiclass:
            return binary_auc(y, probs)
        return multiclass_auc(y, probs)

    @property
    def plain_decision(self) -> str:
        """Name of the decision made without a tuned threshold: ``0.5`` or ``argmax``."""
        return "argmax" if self.multiclass else "0.5"

    def scores(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """AUCs, and the other metrics at 0.5 (binary) or of the argmax, named ``<m>_at_<how>``."""
        if not self.multiclass:
            return at_decision(patch_metrics(y, probs, 0.5), "0.5")
        return at_decision(multiclass_metrics(y, probs, self.classes), "argmax")


def class_counts(df: pd.DataFrame, k: int) -> list[float]:
    """Training rows per class, or with a ``weight`` column the weight each class draws."""
    labels = df["label"].to_numpy(np.int64)
    w = df["weight"].to_numpy(np.float64) if "weight" in df else None
    return [float(v) for v in np.bincount(labels, weights=w, minlength=k)]


def train_fold(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    fold: int,
    run_name: str,
    mlflow_uri: str,
    experiment: str,
    tb_dir: Path,
    tiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on ``train_df``, select on ``val_df``; resume from ``out_dir/last.pt`` if any.

    Labels are integers: 0/1 (binary, one logit) or ``0..K-1`` (K > 2 classes, or
    ``loss="ce"``: one logit per class, named by a ``class_name`` column if any). A ``weight``
    column in ``train_df`` draws training tiles with those weights (with replacement).
    ``cfg.class_balance`` balances the classes from the training rows alone: ``sampler``
    rescales the draw per class (:func:`~histodetect.cohort.sampling.class_balanced_weights`),
    ``loss`` weighs the loss (:func:`~histodetect.fit.model.balanced_loss_weights`, from
    the rows or, with a ``weight`` column, the weight each class draws).
    Writes ``out_dir/last.pt`` (every epoch, with the best weights so far), and at the end
    ``out_dir/model.pt`` (the epoch ``cfg.select`` names; never before training ends, so a
    killed job leaves no model that looks finished) and
    ``out_dir/training_metrics.json`` (threshold-dependent metrics named ``..._at_0.5``, or
    ``..._at_argmax`` for multi-class; the decision chosen out of fold needs every fold, see
    :func:`~histodetect.training.thresholds.write_threshold`) and ``out_dir/val_predictions.parquet`` (each validation
    row's ids, ``label``, ``fold`` and probabilities ``prob``, or ``prob_0..prob_{K-1}``: what the
    out-of-fold threshold is chosen from, see :mod:`histodetect.training.thresholds`); rows with
    ``label == -1`` are dropped. Returns the metrics.
    The model file records the patients it trained on (``train_patients``, from a
    ``patient_id`` column) and ``tiling`` (the tile size and resolution it was trained at), so
    that out-of-fold inference and prediction can check what they are given.
    """
    out_dir = Path(out_dir)
    train_df, val_df = _labelled(train_df), _labelled(val_df)
    tile_px = _single(pd.concat([train_df["tile_px"], val_df["tile_px"]]), "tile_px")
    task = Task.from_tables(cfg, train_df, val_df)
    device = resolve_device(cfg.device)
    seed = cfg.seed + fold
    seed_all(seed)
    state = _new_state(cfg, device, task.outputs)
    resumed = resume(out_dir / "last.pt", cfg.resume_key(), state)
    drop_last = len(train_df) > cfg.batch_size  # no size-1 batch for batch norm
    stain = StainNormalizer(cfg.stain_norm, cfg.stain_reference) if cfg.stain_norm else None
    weights = train_df["weight"].to_numpy(np.float64) if "weight" in train_df else None
    counts = class_counts(train_df, len(task.classes))
    loss_args = balanced_loss_weights(counts, task.loss) if cfg.class_balance == "loss" else {}
    if cfg.class_balance == "sampler":
        weights = class_balanced_weights(train_df["label"].to_numpy(), weights)
    workers = cfg.workers()
    loaders = (
        make_loader(
            train_df, cfg.batch_size, workers, True, seed, drop_last=drop_last,
            weights=weights, transform=stain,
        ),
        make_loader(val_df, cfg.batch_size, workers, False, seed, transform=stain),
    )  # fmt: skip
    y_val = val_df["label"].to_numpy(np.int64 if task.multiclass else np.float32)
    monitor = "auc" if len(np.unique(y_val)) == len(task.classes) else "loss"
    meta = {"tile_px": tile_px, "fold": fold, "monitor": monitor, "config": dataclasses.asdict(cfg)}
    meta |= {"classes": task.classes, "loss": task.loss, "stain_norm": cfg.stain_norm}
    meta |= {"class_balance": cfg.class_balance, "train_class_counts": counts}
    meta |= {"loss_weights": loss_args}
    if "patient_id" in train_df:
        meta["train_patients"] = sorted(map(str, train_df["patient_id"].unique()))
    if tiling is not None:
        meta["tiling"] = dict(tiling)
    params = {**dataclasses.asdict(cfg), "fold": fold, "n_train": len(train_df)}
    params |= {"n_val": len(val_df), "tile_px": tile_px, "num_workers": workers}
    params |= {"classes": ",".join(task.classes), "loss": task.loss, **loss_args}
    n_rows = train_df["label"].value_counts()
    if task.multiclass:
        params |= {f"n_{metric_key(c)}": int(n_rows.get(i, 0)) for i, c in enumerate(task.classes)}
    else:
        params["n_pos"] = int(n_rows.get(1, 0))
    logger = RunLogger(mlflow_uri, experiment, run_name, tb_dir)
    last, key = out_dir / "last.pt", cfg.resume_key()
    with tracked_run(logger, state, params, resumed=resumed, last=last, resume_key=key):
        _fit(state, loaders, y_val, cfg, task, fold, monitor, out_dir, meta, logger, device)
        ids = val_df[[c for c in _ID_COLUMNS if c in val_df]]
        metrics = _finalise(state, loaders[1], y_val, ids, cfg, task, out_dir, meta, device)
        logger.finish(metrics, out_dir / "model.pt")
    return metrics


def _fit(
    state: FitState,
    loaders: tuple[DataLoader, DataLoader],
    y_val: np.ndarray,
    cfg: TrainConfig,
    task: Task,
    fold: int,
    monitor: str,
    out_dir: Path,
    meta: dict[str, Any],
    logger: RunLogger,
    device: torch.device,
) -> None:
    """Run the remaining epochs with checkpointing and early stopping."""
    patience = cfg.early_stopping_patience
    aug_gen = torch.Generator()
    loss_fn = _loss_fn(cfg, task, meta, device)
    for epoch in range(state.epoch + 1, cfg.epochs):
        if state.stop_early(patience):
            break
        loaders[0].generator.manual_seed(cfg.seed + fold + 1000 * epoch)
        aug_gen.manual_seed(cfg.seed + fold + 1000 * epoch + 1)
        train_loss, speed = _train_epoch(
            state, loaders[0], loss_fn, cfg, task, device, aug_gen, f"fold {fold} epoch {epoch}"
        )
        val_loss, probs = _evaluate(state.net, loaders[1], loss_fn, cfg, task, device)
        auc = task.auc(y_val, probs)
        score = [auc, -val_loss] if monitor == "auc" else [-val_loss]  # AUC ties: lower loss
        lr = state.optimizer.param_groups[0]["lr"]
        row = {"train_loss": train_loss, "val_loss": val_loss, "val_auc": auc, "lr": lr, **speed}
        last, key = out_dir / "last.pt", cfg.resume_key()
        record_epoch(state, epoch, score, row, last=last, resume_key=key, logger=logger)
        log.info("fold %d epoch %d: %s", fold, epoch, row)


def _train_epoch(
    state: FitState,
    loader: DataLoader,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    task: Task,
    device: torch.device,
    aug_gen: torch.Generator,
    desc: str,
) -> tuple[float, dict[str, float]]:
    """One pass over the training set.

    Returns the mean loss and the speed: ``train_img_s`` (tiles per second of the whole
    epoch) and ``data_wait`` (share of the epoch spent waiting for the loader).
    """
    model, use_cl = state.model.train(), cfg.channels_last

    def augment(x: torch.Tensor) -> torch.Tensor:
        return augment_batch(
            x, colour_jitter=cfg.colour_jitter, generator=aug_gen, jitter_space=cfg.jitter_space
        )

    def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task.loss_of(loss_fn, logits, y, cfg.label_smoothing)

    total, count, wait = 0.0, 0, 0.0
    start = time.perf_counter()
    batches = iter(tqdm(loader, desc=desc, file=sys.stderr, mininterval=5.0))
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        images, labels = batch
        if cfg.crop_px:
            images = random_crop(images, cfg.crop_px, aug_gen)
        x = prepare_batch(
            images, device, channels_last=use_cl, augment=augment if cfg.augment else None
        )
        y = labels.to(device, non_blocking=True)
        if cfg.mixup_alpha > 0:
            x, perm, lam = mixup(x, cfg.mixup_alpha, aug_gen)
        with _autocast(cfg, device):
            logits = model(x)
            loss = loss_of(logits, y)
            if cfg.mixup_alpha > 0:
                loss = lam * loss + (1 - lam) * loss_of(logits, y[perm])
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update(model)
        total, count = total + loss.item() * len(y), count + len(y)
    elapsed = max(time.perf_counter() - start, 1e-9)
    speed = {"train_img_s": count / elapsed, "data_wait": wait / elapsed}
    return total / max(count, 1), speed


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    task: Task,
    device: torch.device,
) -> tuple[float, np.ndarray]:
    """Mean loss and probabilities over ``loader`` (in order; ``(N, K)`` if multi-class)."""
    model.eval()
    use_cl = cfg.channels_last
    total, probs = 0.0, []
    for images, labels in loader:
        x = prepare_batch(images, device, channels_last=use_cl)
        with _autocast(cfg, device):
            logits = model(x)
        total += task.loss_of(loss_fn, logits, labels.to(device)).item() * len(labels)
        probs.append(task.probs(logits).cpu().numpy())
    n = sum(len(p) for p in probs)
    if not probs:
        return float("nan"), np.zeros((0, task.outputs) if task.multiclass else 0, np.float32)
    return total / max(n, 1), np.concatenate(probs)


def _finalise(
    state: FitState,
    val_loader: DataLoader,
    y_val: np.ndarray,
    ids: pd.DataFrame,
    cfg: TrainConfig,
    task: Task,
    out_dir: Path,
    meta: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Write ``model.pt`` from the selected epoch's weights, score them, write their metrics.

    Binary models are scored at probability 0.5, multi-class ones by their top class
    (weighted averages plus one value per class, e.g. ``patch_recall_<class>_at_argmax``);
    the validation probabilities go to ``val_predictions.parquet`` beside them.
    ``train_img_s`` and ``data_wait`` are means over the epochs run.
    """
    net, epoch = state.net, state.epoch
    if cfg.select == "best":
        net.load_state_dict(state.best_weights)
        epoch = state.best_epoch
    chosen = next(h for h in state.history if h["epoch"] == epoch)
    save_model(out_dir / "model.pt", net, {**meta, **chosen})
    val_loss, probs = _evaluate(
        net, val_loader, _loss_fn(cfg, task, meta, device), cfg, task, device
    )
    table = ids.reset_index(drop=True).assign(label=y_val.astype(np.int64), fold=meta["fold"])
    if task.multiclass:
        table = table.assign(**{f"prob_{k}": probs[:, k] for k in range(probs.shape[1])})
    else:
        table = table.assign(prob=probs)
    with atomic_path(out_dir / PREDICTIONS) as tmp:
        table.to_parquet(tmp, index=False)
    speed = {
        k: float(np.mean([h[k] for h in state.history if k in h] or [np.nan]))
        for k in ("train_img_s", "data_wait")
    }
    metrics: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "selected_epoch": epoch,
        "epochs_run": state.epoch + 1,
        "val_auc": chosen["val_auc"],
        "val_loss": val_loss,
        **{f"patch_{k}": v for k, v in task.scores(y_val, probs).items()},
        **speed,
    }
    with atomic_path(out_dir / TRAINING_METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    return metrics


def _loss_fn(cfg: TrainConfig, task: Task, meta: dict[str, Any], device: torch.device) -> nn.Module:
    """The training loss, with the class weights of ``meta["loss_weights"]`` if any."""
    args = {"alpha": cfg.focal_alpha, "gamma": cfg.focal_gamma, **meta["loss_weights"]}
    return make_loss(task.loss, **args).to(device)


def _new_state(cfg: TrainConfig, device: torch.device, outputs: int) -> FitState:
    model = build_model(
        cfg.backbone, cfg.pretrained, cfg.checkpoint, cfg.hidden, cfg.dropout, outputs
    )
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, cfg.scheduler, cfg.epochs, cfg.early_stopping_patience)
    fp16 = _amp_dtype(cfg, device) == torch.float16
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    return FitState(model, opt, sched, torch.amp.GradScaler("cuda", enabled=fp16), ema)


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["label"] >= 0].reset_index(drop=True)


def _single(values: pd.Series, name: str) -> int:
    unique = values.unique()
    if len(unique) != 1:
        raise ValueError(f"all tiles must share one {name}, found {name_some(sorted(unique))}")
    return int(unique[0])


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not (cfg.amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    dtype = _amp_dtype(cfg, device)
    return nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)
