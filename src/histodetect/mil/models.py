"""Bag models over tile embeddings, the three tasks' heads and losses, and a bag model's
fold file loaded and scored (what the ensemble, the attention maps and predict call).

A bag is a ``(tiles, dim)`` tensor. Every model projects the tiles (linear, ReLU, dropout),
pools them into one vector, and a head turns that into logits:

- ``mean`` / ``max``: mean or element-wise max of the projected tiles (baselines);
- ``abmil``: gated attention (Ilse et al. 2018), ``a = softmax(w . (tanh(V h) * sigmoid(U h)))``;
- ``clam_sb``: the same attention plus CLAM-SB's instance clustering (Lu et al. 2021): the
  ``k`` most attended tiles of a bag of class ``c`` are pushed to "in class" and the ``k``
  least attended to "not" by class ``c``'s instance classifier (in-class loss only);
- ``transformer``: a class token and the projected tiles through ``layers`` transformer
  encoder layers (post-norm: the keys see the tiles' magnitudes; pre-norm, which divides
  them out, did not find the deciding tile of the unit test's bags); the class token's output
  is pooled, and its attention over the tiles in the last layer (mean over heads,
  renormalised over the tiles) is the map. Self attention costs ``tiles**2`` memory:
  ``mil.max_tiles`` caps a training bag.

Tiles are standardised first by the per-dimension mean and spread of the fold's training
tiles (buffers ``shift``, ``scale``, saved with the weights): embeddings of a random or
foreign encoder can be tiny in scale. Every model returns per-tile weights beside its logits (the attention; ``mean``: uniform;
``max``: the share of embedding dimensions whose maximum the tile holds), drawn as maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histodetect.mil.families import FAMILIES

MODELS = ("mean", "max", "abmil", "clam_sb", "transformer")
FORMAT = FAMILIES["abmil"].format
"""The format tag of a bag model's fold file."""


REGRESSION_LOSSES = ("l1", "mse", "huber")


@dataclass(frozen=True)
class MilTask:
    """``binary`` (one logit), ``multiclass`` (one per class), ``ordinal`` (CORAL: one
    shared score and ``K - 1`` ordered thresholds; ``P(y > k) = sigmoid(s + b_k)``) or
    ``regression`` (one output: the standardised number, ``(target - shift) / scale`` with
    the training bags' mean and spread, so that the loss and its Huber knee do not depend
    on the label's unit) or ``survival`` (one output: the bag's log risk; its loss, the Cox
    partial likelihood, needs a batch of bags: :mod:`histodetect.mil.survival`)."""

    kind: str
    classes: list[str]
    regression_loss: str = "mse"
    shift: float = 0.0
    scale: float = 1.0

    @property
    def k(self) -> int:
        return len(self.classes)

    @property
    def classifies(self) -> bool:
        return self.kind not in ("regression", "survival")

    @property
    def outputs(self) -> int:
        return {"binary": 1, "multiclass": self.k, "ordinal": self.k - 1}.get(self.kind, 1)

    def target(self, bag: Any) -> float:
        """What the loss compares a bag's output with: its class code, or its number."""
        return float(bag.y) if self.classifies else float(bag.target)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-bag losses of ``(B, outputs)`` logits against class codes or numbers ``(B,)``
        (survival has none per bag: :func:`histodetect.mil.survival.cox_loss`)."""
        if self.kind == "survival":
            raise ValueError("the Cox loss is a batch's: histodetect.mil.survival.cox_loss")
        if self.kind == "regression":
            z = (y.float() - self.shift) / self.scale
            how = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss}
            loss = how.get(self.regression_loss, nn.functional.huber_loss)
            return loss(logits[:, 0], z, reduction="none")
        bce = nn.functional.binary_cross_entropy_with_logits
        if self.kind == "binary":
            return bce(logits[:, 0], y.float(), reduction="none")
        if self.kind == "multiclass":
            return nn.functional.cross_entropy(logits, y.long(), reduction="none")
        levels = (y[:, None] > torch.arange(self.k - 1, device=y.device)[None]).float()
        return bce(logits, levels, reduction="none").sum(1)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` class probabilities (ordinal: differences of the cumulative ones), or
        ``(B, 1)`` the predicted number (regression) or log risk (survival)."""
        if self.kind == "survival":
            return logits[:, :1]
        if self.kind == "regression":
            return logits[:, :1] * self.scale + self.shift
        if self.kind == "binary":
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], 1)
        if self.kind == "multiclass":
            return torch.softmax(logits, 1)
        above = torch.sigmoid(logits).cummin(1).values  # P(y > k), made non-increasing
        ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
        cum = torch.cat([ones, above, zeros], 1)
        return (cum[:, :-1] - cum[:, 1:]).clamp_min(0)


class GatedAttention(nn.Module):
    """Gated attention scores of projected tiles, ``(N, hidden) -> (N,)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.v, self.u = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))[:, 0]


class ClassTokenEncoder(nn.Module):
    """A class token prepended to the tiles, ``layers`` post-norm encoder layers; returns the
    class token's output ``(hidden,)`` and its last-layer attention over the tiles ``(N,)``."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"mil.hidden ({hidden}) must be a multiple of the heads ({heads})")
        self.token = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.normal_(self.token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([self.token, h[None]], 1)
        *first, last = self.encoder.layers
        for layer in first:
            z = layer(z)
        _, attn = last.self_attn(z[:, :1], z, z, need_weights=True, average_attn_weights=True)
        z = last(z)
        tiles = attn[0, 0, 1:]
        return z[0, 0], tiles / tiles.sum().clamp_min(1e-12)


class BagModel(nn.Module):
    """One of :data:`MODELS` over ``dim``-wide tile embeddings with ``outputs`` logits."""

    def __init__(
        self,
        kind: str,
        dim: int,
        hidden: int,
        outputs: int,
        n_classes: int,
        *,
        ordinal: bool = False,
        dropout: float = 0.25,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if kind not in MODELS:
            raise ValueError(f"mil.model must be one of {', '.join(MODELS)}, not {kind!r}")
        self.kind = kind
        self.arch = {"kind": kind, "dim": dim, "hidden": hidden, "outputs": outputs}
        self.arch |= {"n_classes": n_classes, "ordinal": ordinal, "dropout": dropout}
        if kind == "transformer":
            self.arch |= {"layers": layers, "heads": heads}
        # tiles are standardised by the training tiles' statistics (set by the trainer)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.project = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden) if kind in ("abmil", "clam_sb") else None
        self.encoder = (
            ClassTokenEncoder(hidden, layers, heads, dropout) if kind == "transformer" else None
        )
        if kind == "clam_sb":
            self.instance = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(n_classes))
        # ordinal (CORAL): one score shared by the K - 1 thresholds, which start ordered
        self.head = nn.Linear(hidden, 1 if ordinal else outputs, bias=not ordinal)
        self.bias = nn.Parameter(torch.linspace(1, -1, outputs)) if ordinal else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(1, outputs)``, tile weights ``(N,)`` summing to 1, projected tiles."""
        h = self.project((x - self.shift) / self.scale)
        n = len(h)
        if self.kind == "mean":
            weights = torch.full((n,), 1.0 / n, device=h.device)
            pooled = h.mean(0)
        elif self.kind == "max":
            pooled, where = h.max(0)
            weights = torch.bincount(where, minlength=n).float() / h.shape[1]
        elif self.encoder is not None:
            pooled, weights = self.encoder(h)
        else:
            assert self.attention is not None
            weights = torch.softmax(self.attention(h), 0)
            pooled = weights @ h
        logits = self.head(pooled)[None]
        if self.bias is not None:
            logits = logits + self.bias[None]
        return logits, weights, h

    def instance_loss(self, h: torch.Tensor, weights: torch.Tensor, y: int, k: int) -> torch.Tensor:
        """CLAM-SB's in-class clustering loss of one bag of class ``y`` (0 for other models)."""
        if self.kind != "clam_sb" or len(h) < 2:
            return h.new_zeros(())
        k = min(k, len(h) // 2)
        order = torch.argsort(weights, descending=True)
        picked = torch.cat([order[:k], order[-k:]])
        target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
        return nn.functional.cross_entropy(self.instance[y](h[picked]), target)


def build(meta: dict[str, Any]) -> tuple[BagModel, MilTask]:
    """An untrained model and its task as ``meta`` (of :func:`histodetect.mil.train.train_fold`) describes."""
    arch = meta["arch"]
    model = BagModel(
        arch["kind"], arch["dim"], arch["hidden"], arch["outputs"], arch["n_classes"],
        ordinal=arch["ordinal"], dropout=arch["dropout"],
        layers=arch.get("layers", 2), heads=arch.get("heads", 4),
    )  # fmt: skip
    return model, MilTask(meta["task"], list(meta["classes"]), **meta.get("target", {}))


def load_mil_model(path: str | Path) -> tuple[BagModel, MilTask, dict[str, Any]]:
    """A fold model written by :func:`histodetect.mil.train.train_fold`, in eval mode, with its task and meta."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histodetect MIL model")
    model, task = build(blob["meta"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), task, blob["meta"]


@torch.inference_mode()
def score_bag(model: BagModel, task: MilTask, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(K,)`` (regression: the number, ``(1,)``) and tile weights
    ``(N,)`` of one bag."""
    logits, weights, _ = model(x)
    return task.probs(logits)[0].numpy(), weights.numpy()
