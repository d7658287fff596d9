"""Bags of the fold table, their tile embeddings streamed from the feature files.

Only a bag's file names live in memory; its tiles are read when it is used and dropped after,
so the cohort's size is bounded by disk, not memory (one bag in memory at a time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from histodetect.features.store import SlideFeatures, read_features


@dataclass(frozen=True)
class Bag:
    """One label's slides: ``y`` is the class code (a numeric label: its stratum; -1: predict
    only), ``target`` the numeric label (``mil.task: regression``; survival: the time; NaN
    otherwise), ``event`` survival's event (1 seen, 0 censored; -1 otherwise)."""

    bag_id: str
    group: str
    y: int
    split: str
    fold: int
    slide_ids: tuple[str, ...]
    target: float = float("nan")
    event: int = -1


def bags_of(folds: pd.DataFrame) -> list[Bag]:
    """The bags of a fold table (``results/mil/folds.tsv``), in order of first appearance."""
    bags = []
    for bag_id, rows in folds.groupby("bag_id", sort=False):
        first = rows.iloc[0]
        bags.append(
            Bag(
                str(bag_id), str(first.group), int(rows.y.max()), str(first.split),
                int(first.fold), tuple(rows.slide_id.astype(str)),
                float(first.target) if "target" in rows else float("nan"),
                int(first.event) if "event" in rows else -1,
            )
        )  # fmt: skip
    return bags


class FeatureSource:
    """Reads a bag's tiles from ``<folder>/<slide_id>.h5``, checked against ``expect``."""

    def __init__(self, folder: str | Path, expect: Mapping[str, Any] | None = None) -> None:
        self.folder, self.expect = Path(folder), dict(expect or {})

    def slide(self, slide_id: str) -> SlideFeatures:
        return read_features(self.folder / f"{slide_id}.h5", self.expect)

    def bag(self, bag: Bag) -> torch.Tensor:
        """All tiles of the bag's slides, ``(tiles, dim)`` float32."""
        parts = [self.slide(s).features for s in bag.slide_ids]
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))

    def dim(self, bag: Bag) -> int:
        return int(self.slide(bag.slide_ids[0]).attrs["dim"])

    def stream(self, bags: list[Bag]) -> Iterator[tuple[Bag, torch.Tensor]]:
        """Each bag with its tiles, read one at a time."""
        for bag in bags:
            yield bag, self.bag(bag)


def tile_stats(source: FeatureSource, bags: list[Bag]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (floored at 1e-6) of all tiles of ``bags``,
    read one bag at a time."""
    total, squares, n = 0.0, 0.0, 0
    for _, x in source.stream(bags):
        x64 = x.double()
        total, squares, n = total + x64.sum(0), squares + (x64**2).sum(0), n + len(x)
    mean = total / max(n, 1)
    std = (squares / max(n, 1) - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()
