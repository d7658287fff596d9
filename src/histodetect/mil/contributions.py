"""Each tile's part in a bag's number (``mil.task`` survival or regression): where the
tissue that raises the risk, or the predicted value, lies.

A bag model's output ``f`` is survival's log risk (centred on the fold's training bags, so 0
is their mean) or regression's standardised number (0: the training bags' mean target). Per
tile ``i`` of a bag, with ``h_i`` its projected embedding, ``a_i`` its weight in the model's
map (:class:`histodetect.mil.models.BagModel`) and ``w``, ``b`` the linear head:

- the tile's *score* ``s_i`` is the model's output on the bag of that tile alone: ``w . h_i
  + b`` for ``mean``, ``max``, ``abmil`` and ``clam_sb`` (a one-tile bag pools to ``h_i``);
  for ``transformer``, the class token and that one tile through the encoder, then the head;
- the tile's *contribution* ``c_i``: ``mean``, ``abmil``, ``clam_sb`` pool ``sum_i a_i h_i``
  (mean: ``a_i = 1/n``), so ``c_i = a_i s_i`` and ``sum_i c_i = f`` exactly (the bias
  included: the weights sum to 1). ``max`` takes each embedding dimension ``d`` from the tile
  that holds its maximum: ``c_i = sum_{d held by i} w_d h_id + a_i b`` (``a_i``: the share of
  dimensions it holds), again summing to ``f`` exactly. ``transformer``: ``c_i = a_i s_i``
  with ``a_i`` the class token's last-layer attention; self attention mixes the tiles, so
  the sum only approximates ``f``.

Positive: the tile pushes the bag above the training bags' mean, negative: below. Values are
given in the task's unit: survival in log risk; regression in the label's unit (score: the
number a bag of that tile alone is given; contribution times the target's scale, summing to
the prediction minus the training bags' mean target, the ``reference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from histodetect.mil.models import BagModel, MilTask

CHUNK = 4096
"""Tiles scored alone per transformer pass."""


@dataclass(frozen=True)
class TileContributions:
    """One bag's tiles: ``weights`` (the model's map, summing to 1), ``scores`` and
    ``contributions`` (see the module's docstring), in the task's unit; the bag's ``output``
    and the ``reference`` its contributions are measured from (``sum(contributions)`` is
    ``output - reference``, exactly except for the transformer)."""

    weights: np.ndarray
    scores: np.ndarray
    contributions: np.ndarray
    output: float
    reference: float

    def rows(self, start: int, stop: int) -> TileContributions:
        """The tiles ``start:stop`` (one slide of a bag), with the bag's output."""
        part = slice(start, stop)
        return TileContributions(
            self.weights[part], self.scores[part], self.contributions[part],
            self.output, self.reference,
        )  # fmt: skip


def measurement_names(kind: str) -> tuple[str, str]:
    """The GeoJSON measurement names of a tile's score and contribution for task ``kind``."""
    if kind == "survival":
        return "tile_risk", "risk_contribution"
    if kind == "regression":
        return "tile_value", "value_contribution"
    raise ValueError(f"tile contributions are for survival and regression, not {kind!r}")


def _alone(model: BagModel, h: torch.Tensor) -> torch.Tensor:
    """Each tile's output as a bag of its own ``(N,)`` from projected tiles ``h``."""
    if model.encoder is None:
        return model.head(h)[:, 0]
    token, outs = model.encoder.token, []
    for part in torch.split(h, CHUNK):
        z = torch.cat([token.expand(len(part), 1, -1), part[:, None]], 1)
        outs.append(model.head(model.encoder.encoder(z)[:, 0])[:, 0])
    return torch.cat(outs)


@torch.inference_mode()
def tile_contributions(model: BagModel, task: MilTask, x: torch.Tensor) -> TileContributions:
    """The tiles' scores and contributions to the bag ``x`` ``(N, dim)`` by ``model`` (in eval
    mode), a survival or regression model (see the module's docstring)."""
    measurement_names(task.kind)  # a class task has no one number to share out
    logits, weights, h = model(x)
    out, scores = logits[0, 0], _alone(model, h)
    if model.kind == "max":
        pooled, where = h.max(0)
        held = torch.zeros(len(h), dtype=h.dtype).index_add_(
            0, where, model.head.weight[0] * pooled
        )
        contributions = held + weights * model.head.bias[0]
    else:
        contributions = weights * scores
    scale, shift = (task.scale, task.shift) if task.kind == "regression" else (1.0, 0.0)
    return TileContributions(
        weights.numpy(), (scores * scale + shift).numpy(), (contributions * scale).numpy(),
        float(out) * scale + shift, shift,
    )  # fmt: skip


def mean_contributions(parts: Sequence[TileContributions]) -> TileContributions:
    """The fold models' mean over one bag (the ensemble's output is their mean too)."""
    return TileContributions(
        *(np.mean([getattr(p, k) for p in parts], axis=0)
          for k in ("weights", "scores", "contributions")),
        float(np.mean([p.output for p in parts])), float(np.mean([p.reference for p in parts])),
    )  # fmt: skip
