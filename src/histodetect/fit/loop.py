"""What every fold training loop shares: its state, ``last.pt`` to resume from, seeds,
early stopping and the per-epoch bookkeeping (tile classifiers and slide-label models alike)."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histodetect.fit.ema import WeightEMA
from histodetect.fit.tracking import RunLogger
from histodetect.io import atomic_path

log = logging.getLogger(__name__)
_SAVED = ("epoch", "best_score", "best_epoch", "bad_epochs", "best_weights", "history", "run_id")


@dataclass
class FitState:
    """Everything that changes during training, checkpointed in ``last.pt``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: WeightEMA | None = None
    epoch: int = -1
    best_score: list[float] = field(default_factory=lambda: [-float("inf")])
    best_epoch: int = -1
    bad_epochs: int = 0
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None

    @property
    def net(self) -> nn.Module:
        """The network that is validated and saved: the weight average if any, else the model."""
        return self.model if self.ema is None else self.ema.module

    def stop_early(self, patience: int) -> bool:
        """Whether ``patience`` (> 0) epochs in a row brought no better validation score."""
        return patience > 0 and self.bad_epochs >= patience


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, patience: int) -> Any:
    """``cosine`` over ``epochs``, or ``plateau`` (halving after ``patience // 2`` flat epochs)."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, "max", factor=0.5, patience=max(1, patience // 2)
    )


def record_epoch(
    state: FitState,
    epoch: int,
    score: list[float],
    row: dict[str, float],
    *,
    last: Path,
    resume_key: dict[str, Any],
    logger: RunLogger,
) -> None:
    """Keep the best weights by ``score`` (compared as a list), step the scheduler, append
    ``row`` to the history, write ``last`` and log the epoch."""
    state.epoch, state.bad_epochs = epoch, state.bad_epochs + 1
    if score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
        state.best_weights = copy.deepcopy(state.net.state_dict())
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.scheduler.step(score[0])
    else:
        state.scheduler.step()
    state.history.append({"epoch": epoch, **row})
    save_last(last, resume_key, state)
    logger.log_epoch(epoch, row)


@contextmanager
def tracked_run(
    logger: RunLogger,
    state: FitState,
    params: dict[str, Any],
    *,
    resumed: bool,
    last: Path,
    resume_key: dict[str, Any],
) -> Iterator[None]:
    """Open the fold's run (reopened on resume) and write ``last`` when starting afresh; the
    body trains and calls ``logger.finish``; if it raises, the run is marked failed."""
    state.run_id = logger.start(state.run_id, params, state.history)
    if not resumed:
        save_last(last, resume_key, state)
    try:
        yield
    except BaseException:
        logger.fail()
        raise


def save_last(path: Path, resume_key: dict[str, Any], state: FitState) -> None:
    """Write ``state`` (weights, optimiser, scheduler, RNGs, history, best so far) to ``path``."""
    blob = {
        "resume_key": resume_key,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": None if state.ema is None else state.ema.state_dict(),
        "rng": rng_state(),
        **{k: getattr(state, k) for k in _SAVED},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def resume(path: Path, resume_key: dict[str, Any], state: FitState) -> bool:
    """Load ``last.pt`` into ``state`` if it exists and was made with the same ``resume_key``."""
    if not path.exists():
        return False
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob.get("resume_key") != resume_key:
        log.warning("%s was written with another config: starting afresh", path)
        return False
    state.model.load_state_dict(blob["model"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    state.scaler.load_state_dict(blob["scaler"])
    if state.ema is not None:
        state.ema.load_state_dict(blob["ema"])
    for key in _SAVED:
        setattr(state, key, blob[key])
    set_rng_state(blob["rng"])
    log.info("resuming from %s after epoch %d", path, state.epoch)
    return True


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (global RNG used by third-party code)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states (torch, CUDA, numpy, Python)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    numpy_state = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": numpy_state,
        "random": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])  # noqa: NPY002
    random.setstate(rng["random"])
