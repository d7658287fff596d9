"""A slide's answer to "has it a lesion?" from its tile probabilities (Camelyon16's slide task)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

METHODS = ("max", "top_k_mean", "fraction")
SLIDE_COLUMNS = ["slide_id", "slide_score", "lesion", "n_boxes"]
"""Columns of a ``slides.tsv``: the slide score, the lesion call (yes/no), boxes found."""


@dataclass(frozen=True)
class SlideScore:
    """How tile probabilities become one slide score, and the score that means "lesion".

    ``max``: the highest tile probability; ``top_k_mean``: the mean of the ``top_k`` highest;
    ``fraction``: the share of tiles at or above ``tile_threshold``. A slide is called
    positive when its score is at or above ``threshold``.
    """

    method: str = "max"
    top_k: int = 5
    tile_threshold: float = 0.5
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown slide score {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {self.top_k}")

    def score(self, probs: ArrayLike) -> float:
        """The slide score of ``probs`` (NaN ignored; 0 for a slide without tiles)."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        p = p[np.isfinite(p)]
        if p.size == 0:
            return 0.0
        if self.method == "max":
            return float(p.max())
        if self.method == "top_k_mean":
            k = min(self.top_k, p.size)
            return float(np.partition(p, p.size - k)[p.size - k :].mean())
        return float((p >= self.tile_threshold).mean())

    def positive(self, score: float) -> bool:
        """Whether a slide of this score is called a lesion slide."""
        return bool(score >= self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SlideScore:
        """From a config section or a tuning record (unknown keys ignored)."""
        names = {"method", "top_k", "tile_threshold", "threshold"}
        return cls(**{k: v for k, v in values.items() if k in names})
