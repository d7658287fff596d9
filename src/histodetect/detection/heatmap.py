"""Tile-grid heatmaps with their geometry in level-0 pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histodetect.io import atomic_path


@dataclass(frozen=True)
class Heatmap:
    """Lesion probability on the tile grid of one slide.

    ``prob[r, c]`` is the score of the tile whose top-left corner is at level-0 pixel
    ``(origin_x + c * stride, origin_y + r * stride)`` and whose side is ``tile_size``
    level-0 pixels. Cells without a tissue tile hold NaN.
    """

    slide_id: str
    prob: np.ndarray
    origin_x: float
    origin_y: float
    stride: float
    tile_size: float
    mpp: float
    """Microns per level-0 pixel of the slide."""
    level: int
    """Pyramid level the tiles were read from."""
    slide_width: int
    slide_height: int

    def tile_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Level-0 box ``(x1, y1, x2, y2)`` of one grid cell."""
        x1 = self.origin_x + col * self.stride
        y1 = self.origin_y + row * self.stride
        return (x1, y1, x1 + self.tile_size, y1 + self.tile_size)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                prob=self.prob.astype(np.float32),
                slide_id=np.array(self.slide_id),
                geometry=np.array(
                    [self.origin_x, self.origin_y, self.stride, self.tile_size, self.mpp],
                    dtype=np.float64,
                ),
                ints=np.array([self.level, self.slide_width, self.slide_height], dtype=np.int64),
            )

    @classmethod
    def load(cls, path: str | Path) -> Heatmap:
        """Read a heatmap written by :meth:`save`."""
        with np.load(path) as z:
            ox, oy, stride, tile, mpp = (float(v) for v in z["geometry"])
            level, w, h = (int(v) for v in z["ints"])
            return cls(str(z["slide_id"]), z["prob"], ox, oy, stride, tile, mpp, level, w, h)
