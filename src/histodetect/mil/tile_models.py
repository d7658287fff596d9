"""The slide-label models that read tiles from the slides instead of features (``concat``,
the summary image; ``topk``, the fine-tuned tile encoder): which one a fold file holds, its
scorer for the ensemble and its tile weights for the attention maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from histodetect.mil import train_concat, train_topk
from histodetect.mil.data import Bag
from histodetect.mil.families import family_of_format
from histodetect.mil.summary_image import TileSource


def tile_model_kind(path: str | Path) -> str | None:
    """``concat`` or ``topk`` for a fold model that reads tiles, None for a bag model (the
    family its file's format tag names, :mod:`histodetect.mil.families`)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    chosen = family_of_format(blob.get("format"))
    return chosen.name if chosen is not None and chosen.reads_tiles else None


def tile_scorer(
    paths: Sequence[str | Path], source: TileSource
) -> train_concat.ConcatScorer | train_topk.TopkScorer | None:
    """The fold models' scorer for :func:`histodetect.mil.ensemble.ensemble` (None: a bag
    model over features, scored there)."""
    kind = tile_model_kind(paths[0])
    if kind == "concat":
        return train_concat.ConcatScorer(paths, source)
    return train_topk.TopkScorer(paths, source) if kind == "topk" else None


def tile_weights(
    paths: Sequence[str | Path], source: TileSource
) -> tuple[Callable[[Bag, Sequence[int] | None], np.ndarray], str] | None:
    """``weigh(bag, which)``, a bag's tile weights by the fold models (``which``: the indices of
    ``paths`` to use, None: all), and what they are; None for a bag model, whose attention its
    own forward pass gives. Concat: the occlusion effect of each drawn tile; topk: each tile's
    own score. The models are loaded once."""
    kind = tile_model_kind(paths[0])
    if kind == "concat":
        loaded = [train_concat.load_concat_model(p) for p in paths]
        pairs, meta = [m[:2] for m in loaded], loaded[0][2]

        def occlusion(bag: Bag, which: Sequence[int] | None) -> np.ndarray:
            chosen = pairs if which is None else [pairs[i] for i in which]
            return train_concat.occlusion_weights(chosen, source, bag, meta)

        return occlusion, "summary-image model, attention = occlusion effect in the draws"
    if kind == "topk":
        scorer = train_topk.TopkScorer(paths, source)
        return scorer.weights, "top-k tile model, attention = each tile's own score"
    return None
